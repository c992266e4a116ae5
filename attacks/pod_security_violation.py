"""Create a pod in a workload namespace that breaks one Pod Security baseline rule.

Differential proof (kubeprobe.admission): the positive twin is the same restricted,
trusted, digest-pinned pod without the violation, sent by the same identity to the same
namespace; it must be admitted, or the refusal could be any other policy's. Both go as
server-side dry runs, in the run's namespace and in every workload namespace tried.

SUCCEEDED: the violating pod is admitted (the namespaces where it would be are named).
BLOCKED:   admission refused it (Pod Security Admission or a policy) and admitted its twin.
INCONCLUSIVE: the twin was refused too (the evidence names who refused it).
"""
from kubeprobe.admission import differential, pod_write, with_sweep
from kubeprobe.workloads import pod_manifest, trusted_image

TARGETS = "apiserver"


def _privileged(spec):
    # API validation rejects privileged together with allowPrivilegeEscalation: false.
    spec["containers"][0]["securityContext"].update(privileged=True,
                                                    allowPrivilegeEscalation=True)


VIOLATIONS = {
    "privileged": _privileged,
    "hostPID": lambda spec: spec.update(hostPID=True),
    "hostNetwork": lambda spec: spec.update(hostNetwork=True),
    "hostPath-root": lambda spec: spec.update(volumes=[
        {"name": "host", "hostPath": {"path": "/"}}]),
    "hostPath-proc": lambda spec: spec.update(volumes=[
        {"name": "host", "hostPath": {"path": "/proc"}}]),
}


def violation_pair(ctx, violation, namespace):
    """(twin, attack) pod writes that differ only in the violation."""
    twin = pod_manifest(ctx, ctx.unique_name("probe"), trusted_image(ctx))
    attack = pod_manifest(ctx, ctx.unique_name("probe"), trusted_image(ctx))
    VIOLATIONS[violation](attack["spec"])
    return (pod_write(ctx, "the same pod without the violation", twin, namespace),
            pod_write(ctx, f"a {violation} pod", attack, namespace))


def run(ctx, target, violation="privileged"):
    observation, _ = differential(ctx, violation,
                                  *violation_pair(ctx, violation, ctx.namespace()))
    return with_sweep(ctx, observation, violation,
                      lambda namespace: violation_pair(ctx, violation, namespace))
