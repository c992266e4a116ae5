"""Open a connection out of a kube-system control-plane container from a process that is
not allowed to connect out (intrusive). In etcd's distroless image the process is
`etcdctl`, dialling the node's own address (the pod's hostIP, not loopback) on the etcd
client port without credentials, asking for a key named after the attack's nonce. No key
can be read: there is no client certificate and the server certificate is not trusted.

SUCCEEDED: etcdctl ran and dialled out (connect(2) started: what an outbound rule sees);
           its error shows how far the connection got (TLS handshake, certificate,
           refusal). The control expects the run-time detector to ALERT (unexpected
           outbound connection).
BLOCKED:   the API server refused the exec.
INCONCLUSIVE: no route to the address (nothing was dialled), or etcdctl is missing.
"""
from kubeprobe.outcome import Observation
from kubeprobe.podexec import component_pod, exec_in_component, node_address

TARGETS = "apiserver"


def run(ctx, target, component="etcd", container="etcd", port=2379):
    pod = component_pod(ctx.kube, component)
    if pod is None:
        return Observation.inconclusive(f"no {component} pod in kube-system")
    address = node_address(pod, port)
    if address is None:
        return Observation.inconclusive(f"{pod.metadata.name} has no non-loopback hostIP to "
                                        f"dial ({pod.status.host_ip!r})")
    endpoint = f"https://{address}"
    command = ["etcdctl", f"--endpoints={endpoint}", "--dial-timeout=2s", "--command-timeout=3s",
               "get", "kubeprobe-{nonce}"]
    started = exec_in_component(ctx, component, container, command)
    if isinstance(started, Observation):
        return started
    evidence = started.evidence(ctx.nonce, destination=endpoint)
    if started.result.returncode is None:
        return Observation.inconclusive(f"{started.what}: no exit status", **evidence)
    if any(s in started.output.lower() for s in ("network is unreachable", "no route to host")):
        return Observation.inconclusive(f"{started.what}: no route, nothing was dialled",
                                        **evidence)
    return Observation.succeeded(f"{started.what}: etcdctl dialled {endpoint} "
                                 f"(exit {started.result.returncode})", **evidence)
