"""A system tool that never uses the network (`sha256sum`) opens a TCP connection from
inside a kube-system control-plane container (intrusive, needs node access): the shape of
a trojaned binary or a tool abused for exfiltration. The tool is the kubeprobe agent
dropped into the container from the node under that name (kubeprobe.plant) and started
with `kubectl exec`; it connects once to the node's address on the etcd client port (a
listener every kubeadm control-plane node has) and closes, sending nothing.

SUCCEEDED: the planted tool connected (its "connected to" line is the proof).
BLOCKED:   the API server refused the exec.
INCONCLUSIVE: the connection failed (nothing to detect), or the tool did not run.
SKIP:      no node access for this target (only the lab and kind give it).
"""
from kubeprobe.outcome import Observation
from kubeprobe.plant import run_planted
from kubeprobe.podexec import component_pod, node_address

TARGETS = "apiserver"


def run(ctx, target, component="etcd", container="etcd", tool="sha256sum", port=2379):
    pod = component_pod(ctx.kube, component)
    address = node_address(pod, port) if pod is not None else None
    if address is None:
        return Observation.inconclusive(f"no {component} pod with a node address to connect to")
    started = run_planted(ctx, component, container, tool, [address], pod=pod)
    if isinstance(started, Observation):
        return started
    evidence = started.evidence(ctx.nonce, destination=address,
                                stand_in=f"the kubeprobe agent named {tool}")
    if started.result.returncode == 0 and "connected to " in started.result.stdout:
        return Observation.succeeded(f"{started.what}: {tool} connected to {address}",
                                     **evidence)
    return Observation.inconclusive(f"{started.what}: {tool} did not connect", **evidence)
