"""Launch a privileged container, or one with a sensitive host mount, in a workload
namespace and let it really start: what a run-time "privileged / sensitive-mount container
launched" rule sees where admission let it through. The container is the kubeprobe agent
(`sleep` until the pod is deleted) with the violation from pod_security_violation applied;
the pod is named after the attack's nonce.

Differential proof: the twin is the same agent pod without the violation, sent first as a
dry run; it must be admitted. The attack is a dry run too; only if admitted is it created
for real and left to start.

BLOCKED:   admission refused the pod and admitted the twin (the prevention side; PODSEC-01/04
           judge it alone).
SUCCEEDED: the container is Running with the violation: the detector must ALERT.
INCONCLUSIVE: the twin was refused, or the pod was stored but did not start.
SKIP:      no probe image for this target (an existing cluster without --probe-image).
"""
from pathlib import Path

from kubeprobe.admission import differential, pod_write
from kubeprobe.catalog import load_attack
from kubeprobe.context import Unavailable
from kubeprobe.outcome import Observation, Outcome
from kubeprobe.workloads import create_pod, restricted_container, wait_for_pod

TARGETS = "apiserver"
# The sibling module, by path: attacks/ in a checkout, kubeprobe/attacks when installed.
VIOLATIONS = load_attack("pod_security_violation", Path(__file__).parent).VIOLATIONS


def _agent_pod(ctx, name, violation=None, spec=None):
    container = restricted_container("agent", ctx.probe_image)
    container.update(command=["/kubeprobe-agent", "sleep", f"--kubeprobe-nonce={ctx.nonce}"])
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": ctx.labels},
            "spec": {"containers": [container], "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 0, **(spec or {})}}
    if violation:
        VIOLATIONS[violation](body["spec"])
        # A host path only counts as mounted when the container mounts it (read-only here).
        container["volumeMounts"] = [{"name": v["name"], "mountPath": f"/host-{v['name']}",
                                      "readOnly": True}
                                     for v in body["spec"].get("volumes", []) if "hostPath" in v]
    return body


def run(ctx, target, violation="privileged", start_within_seconds=60):
    if ctx.probe_image is None:
        raise Unavailable("no probe image for this target (pass --probe-image)")
    namespace = ctx.namespace()
    name = ctx.unique_name(f"launch-{violation.lower()}")
    spec = ctx.probe_image_spec(namespace)   # its pull Secret, when the run has one
    body = _agent_pod(ctx, name, violation, spec)
    what = f"launch a {violation} container in pod {name}"
    observation, pair = differential(
        ctx, violation,
        pod_write(ctx, "the same agent pod without the violation",
                  _agent_pod(ctx, ctx.unique_name("launch"), spec=spec), namespace),
        pod_write(ctx, what, body, namespace))
    if observation.outcome is not Outcome.SUCCEEDED:
        return observation
    if pair.attack.dry_run:
        created, refused = create_pod(ctx, what, body)
        if refused:
            return Observation.inconclusive(f"{what}: admitted as a dry run, then refused: "
                                            f"{refused.summary}", **observation.evidence)
    phase = wait_for_pod(ctx, namespace, name, ("Running",), start_within_seconds)
    container = body["spec"]["containers"][0]
    evidence = {"pod": f"{namespace}/{name}", "phase": phase, "violation": violation,
                "nonce": ctx.nonce, **observation.evidence,
                "security": {"privileged": container["securityContext"].get("privileged", False),
                             "volumes": body["spec"].get("volumes", [])}}
    if phase == "Running":
        return Observation.succeeded(f"{what}: the container is running", **evidence)
    return Observation.inconclusive(f"{what}: the container did not start ({phase or 'timeout'})",
                                    **evidence)
