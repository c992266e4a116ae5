"""Open a listening socket in a kube-system control-plane container from a process that is
not allowed to listen (intrusive, needs node access). The listener is the kubeprobe agent,
dropped into the container from the node (kubeprobe.plant) and started through `kubectl
exec`: it listens on an ephemeral loopback port, reports it and closes it.

SUCCEEDED: the planted process listened (its "listening on" line is the proof).
BLOCKED:   the API server refused the exec.
SKIP:      no node access for this target (only the lab and kind give it).
"""
from kubeprobe.outcome import Observation
from kubeprobe.plant import run_planted

TARGETS = "apiserver"


def run(ctx, target, component="etcd", container="etcd"):
    started = run_planted(ctx, component, container, "kubeprobe-agent", ["listen"])
    if isinstance(started, Observation):
        return started
    if started.result.returncode == 0 and "listening on " in started.result.stdout:
        listened = started.result.stdout.split("listening on ", 1)[1].split()[0]
        return Observation.succeeded(f"{started.what}: listened on {listened}",
                                     **started.evidence(ctx.nonce))
    return Observation.inconclusive(f"{started.what}: nothing listened",
                                    **started.evidence(ctx.nonce))
