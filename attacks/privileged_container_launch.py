"""Launch a privileged container, or one with a sensitive host mount, in a workload
namespace and let it really start: what a run-time "privileged / sensitive-mount container
launched" rule sees where admission let it through. The container is the kubeprobe agent
(`sleep` until the pod is deleted) with the violation from pod_security_violation applied;
the pod is named after the attack's nonce.

BLOCKED:   admission refused the pod (the prevention side; PODSEC-01/04 judge it alone).
SUCCEEDED: the container is Running with the violation: the detector must ALERT.
INCONCLUSIVE: the pod was stored but did not start (stuck or too slow).
SKIP:      no probe image for this target (an existing cluster without --probe-image).
"""
from attacks.pod_security_violation import VIOLATIONS
from kubeprobe.context import Unavailable
from kubeprobe.outcome import Observation
from kubeprobe.workloads import create_pod, restricted_container, wait_for_pod

TARGETS = "apiserver"


def run(ctx, target, violation="privileged", start_within_seconds=60):
    if ctx.probe_image is None:
        raise Unavailable("no probe image for this target (pass --probe-image)")
    name = ctx.unique_name(f"launch-{violation.lower()}")
    container = restricted_container("agent", ctx.probe_image)
    container.update(command=["/kubeprobe-agent", "sleep", f"--kubeprobe-nonce={ctx.nonce}"])
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": ctx.labels},
            "spec": {"containers": [container], "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 0}}
    VIOLATIONS[violation](body["spec"])
    # A host path only counts as mounted when the container mounts it (read-only here).
    container["volumeMounts"] = [{"name": v["name"], "mountPath": f"/host-{v['name']}",
                                  "readOnly": True}
                                 for v in body["spec"].get("volumes", []) if "hostPath" in v]
    what = f"launch a {violation} container in pod {name}"
    created, refused = create_pod(ctx, what, body)
    if refused:
        return refused
    namespace = created.metadata.namespace
    phase = wait_for_pod(ctx, namespace, name, ("Running",), start_within_seconds)
    evidence = {"pod": f"{namespace}/{name}", "phase": phase, "violation": violation,
                "nonce": ctx.nonce,
                "security": {"privileged": container["securityContext"].get("privileged", False),
                             "volumes": body["spec"].get("volumes", [])}}
    if phase == "Running":
        return Observation.succeeded(f"{what}: the container is running", **evidence)
    return Observation.inconclusive(f"{what}: the container did not start ({phase or 'timeout'})",
                                    **evidence)
