"""Create a pod in a workload namespace that breaks one Pod Security baseline rule, with a
trusted digest-pinned image so that only the rule under test can be the reason to refuse.

SUCCEEDED: the API server stored the pod.
BLOCKED:   admission refused it (Pod Security Admission or a policy).
"""
from kubeprobe.outcome import Observation
from kubeprobe.workloads import create_pod, pod_manifest

TARGETS = "apiserver"

VIOLATIONS = {
    "privileged": lambda spec: spec["containers"][0]["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=True, runAsNonRoot=False, runAsUser=0),
    "hostPID": lambda spec: spec.update(hostPID=True),
    "hostNetwork": lambda spec: spec.update(hostNetwork=True),
    "hostPath-root": lambda spec: spec.update(volumes=[
        {"name": "host", "hostPath": {"path": "/"}}]),
    "hostPath-proc": lambda spec: spec.update(volumes=[
        {"name": "host", "hostPath": {"path": "/proc"}}]),
}


def run(ctx, target, violation="privileged"):
    body = pod_manifest(ctx, ctx.unique_name(violation.lower()))
    VIOLATIONS[violation](body["spec"])
    what = f"create a {violation} pod in a workload namespace"
    created, refused = create_pod(ctx, what, body)
    return refused or Observation.succeeded(f"{what}: the API server stored it",
                                            violation=violation)
