"""Create a Service that opens a port on every node: type NodePort, or a LoadBalancer that
allocates node ports.

SUCCEEDED: the API server stored the Service (the allocated node ports are the proof).
BLOCKED:   admission refused it.
"""
from kubeprobe.outcome import Observation
from kubeprobe.workloads import create

TARGETS = "apiserver"


def run(ctx, target, service_type="NodePort"):
    namespace = ctx.namespace()
    name = ctx.unique_name("np")
    body = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": ctx.labels},
            "spec": {"type": service_type, "selector": {"kubeprobe.io/none": name},
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    core = ctx.kube.core
    what = f"create a {service_type} Service"
    created, refused = create(ctx, what, "service", namespace, body,
                              core.create_namespaced_service, core.delete_namespaced_service)
    if refused:
        return refused
    ports = [p.node_port for p in created.spec.ports if p.node_port]
    return Observation.succeeded(f"{what}: stored {namespace}/{name} with node port(s) {ports}",
                                 node_ports=ports, nonce=name)
