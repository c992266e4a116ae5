"""Create a Service that opens a port on every node: type NodePort, or a LoadBalancer that
allocates node ports.

Differential proof: the twin is the same Service without node ports (ClusterIP for
NodePort; a LoadBalancer with allocateLoadBalancerNodePorts: false for LoadBalancer); it
must be admitted. Dry runs, in the run's namespace and in every workload namespace tried.
Where the attack is admitted in the run's namespace it is then created for real, so the
allocated node ports are the proof and an audit-based detector has a creation to see.

SUCCEEDED: the API server admitted the Service (stored with its node ports).
BLOCKED:   admission refused it and admitted the twin.
"""
from kubeprobe.admission import create_write, differential, with_sweep
from kubeprobe.outcome import Observation, Outcome
from kubeprobe.workloads import create

TARGETS = "apiserver"
TWIN_SPEC = {"NodePort": {"type": "ClusterIP"},
             "LoadBalancer": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False}}


def _service(ctx, name, **spec):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": ctx.labels},
            "spec": {"selector": {"kubeprobe.io/none": name},
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}], **spec}}


def service_pair(ctx, service_type, namespace):
    core = ctx.kube.core
    twin = _service(ctx, ctx.unique_name("np"), **TWIN_SPEC[service_type])
    attack = _service(ctx, ctx.unique_name("np"), type=service_type)
    return (create_write(ctx, "the same Service without node ports", namespace, twin,
                         core.create_namespaced_service),
            create_write(ctx, f"a {service_type} Service", namespace, attack,
                         core.create_namespaced_service))


def run(ctx, target, service_type="NodePort"):
    namespace = ctx.namespace()
    property_under_test = f"node ports ({service_type})"
    observation, pair = differential(ctx, property_under_test,
                                     *service_pair(ctx, service_type, namespace))
    if observation.outcome is Outcome.SUCCEEDED and pair.attack.dry_run:
        core = ctx.kube.core
        body = _service(ctx, ctx.unique_name("np"), type=service_type)
        what = f"create a {service_type} Service"
        created, refused = create(ctx, what, namespace, body, core.create_namespaced_service)
        if created is not None:
            ports = [p.node_port for p in created.spec.ports if p.node_port]
            observation = Observation.succeeded(
                f"{what}: admitted as a dry run, then stored {namespace}/"
                f"{created.metadata.name} with node port(s) {ports}", node_ports=ports,
                **observation.evidence)
        else:
            ctx.note(f"the real create after an admitted dry run was refused: {refused.summary}")
    return with_sweep(ctx, observation, property_under_test,
                      lambda ns: service_pair(ctx, service_type, ns))
