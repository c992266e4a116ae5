"""A long-running process reads its mounted ServiceAccount token well after start-up: the
behaviour of a compromised service that starts harvesting credentials. A pod named after
the attack's nonce runs the kubeprobe agent as its only process; the agent waits past the
rule's start-up window (`after_seconds`, longer than the allowlist's secret_read_after_ns)
and then reads the token once, reporting the size it read, never the content.

The wait is the attack's own behaviour (a process must be old to be "after start-up"); the
suite itself polls the pod until it finishes or gets stuck, within a deadline.

SUCCEEDED: the agent's log says it read N bytes of the token after the window. The control
           expects the run-time detector to ALERT (secret read after start-up).
BLOCKED:   admission refused the pod.
INCONCLUSIVE: the pod did not finish in time or got stuck (image missing), or no token
           was mounted.
SKIP:      no probe image for this target (an existing cluster without --probe-image).
"""
from kubeprobe.context import Unavailable
from kubeprobe.outcome import Observation
from kubeprobe.workloads import create_pod, restricted_container, wait_for_pod

TARGETS = "apiserver"
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def run(ctx, target, after_seconds=65, finish_within_seconds=60):
    if ctx.probe_image is None:
        raise Unavailable("no probe image for this target (pass --probe-image)")
    name = ctx.unique_name("secret-read")
    container = restricted_container("reader", ctx.probe_image)
    container.update(command=["/kubeprobe-agent", "read-secret-after", str(after_seconds), TOKEN,
                              f"--kubeprobe-nonce={ctx.nonce}"])
    container["securityContext"]["readOnlyRootFilesystem"] = True
    namespace = ctx.namespace()
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": ctx.labels},
            "spec": {"containers": [container], "restartPolicy": "Never",
                     "automountServiceAccountToken": True, "terminationGracePeriodSeconds": 0,
                     **ctx.probe_image_spec(namespace)}}
    what = f"read the mounted token {after_seconds}s after start-up in pod {name}"
    created, refused = create_pod(ctx, what, body, namespace)
    if refused:
        return refused
    namespace = created.metadata.namespace
    phase = wait_for_pod(ctx, namespace, name, ("Succeeded", "Failed"),
                         after_seconds + finish_within_seconds)
    log = ctx.kube.core.read_namespaced_pod_log(
        name, namespace, container="reader", _request_timeout=ctx.kube.timeout
    ) if phase in ("Succeeded", "Failed") else ""
    evidence = {"pod": f"{namespace}/{name}", "phase": phase, "agent_log": log[-500:],
                "nonce": ctx.nonce, "after_seconds": after_seconds}
    if phase == "Succeeded" and f"of {TOKEN} after" in log:
        return Observation.succeeded(f"{what}: {log.strip().splitlines()[-1]}", **evidence)
    return Observation.inconclusive(f"{what}: the read did not happen (phase {phase or 'unknown'})",
                                    **evidence)
