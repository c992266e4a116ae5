"""Open a listening socket in a kube-system control-plane container from a process that is
not allowed to listen (intrusive, needs node access). The listener is the kubeprobe agent,
dropped into the container from the node (kubeprobe.plant) and started through `kubectl
exec`: it listens on an ephemeral loopback port, reports it and closes it.

SUCCEEDED: the planted process listened (its "listening on" line is the proof).
BLOCKED:   the API server refused the exec.
SKIP:      no node access for this target (only the lab and kind give it).
"""
from kubeprobe.outcome import Observation
from kubeprobe.plant import PLANTED, plant_in_component
from kubeprobe.podexec import exec_in_component

TARGETS = "apiserver"


def run(ctx, target, component="etcd", container="etcd"):
    path = plant_in_component(ctx, component, container, "kubeprobe-agent")
    run = exec_in_component(ctx, component, container,
                            [path, "listen", "--kubeprobe-nonce={nonce}"], PLANTED)
    if isinstance(run, Observation):
        return run
    if run.result.returncode == 0 and "listening on " in run.result.stdout:
        listened = run.result.stdout.split("listening on ", 1)[1].split()[0]
        return Observation.succeeded(f"{run.what}: listened on {listened}",
                                     **run.evidence(ctx.nonce))
    return Observation.inconclusive(f"{run.what}: nothing listened", **run.evidence(ctx.nonce))
