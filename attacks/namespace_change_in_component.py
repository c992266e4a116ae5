"""Call setns(2) from inside a kube-system control-plane container (intrusive, needs node
access): the first step of moving into another namespace (a container escape through a
leaked namespace file, or joining the host's). The caller is the kubeprobe agent dropped
into the container from the node (kubeprobe.plant) and started with `kubectl exec`; it
asks to join its own network namespace, so even where the kernel allows it nothing changes.
Without CAP_SYS_ADMIN the kernel answers EPERM: the call was still made, and that call is
what a "change thread namespace" rule sees.

SUCCEEDED: the agent made the call and reports the kernel's answer.
BLOCKED:   the API server refused the exec.
SKIP:      no node access for this target (only the lab and kind give it).
"""
from kubeprobe.outcome import Observation
from kubeprobe.plant import run_planted

TARGETS = "apiserver"
REPORTED = "setns(/proc/self/ns/net, CLONE_NEWNET) returned "


def run(ctx, target, component="etcd", container="etcd"):
    started = run_planted(ctx, component, container, "kubeprobe-agent", ["setns"])
    if isinstance(started, Observation):
        return started
    evidence = started.evidence(ctx.nonce)
    if started.result.returncode == 0 and REPORTED in started.result.stdout:
        answer = started.result.stdout.split(REPORTED, 1)[1].strip()
        return Observation.succeeded(f"{started.what}: setns returned {answer}", **evidence)
    return Observation.inconclusive(f"{started.what}: setns was not called", **evidence)
