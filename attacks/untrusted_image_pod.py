"""Create a bare Pod whose image comes from a registry outside the trusted list (in the
containers or the initContainers), after a positive control: a trusted, digest-pinned pod
must be admitted, or a deny-everything policy would pass.

SUCCEEDED: the API server stored the pod.
BLOCKED:   admission refused it; the evidence names the mechanism (ValidatingAdmissionPolicy,
           webhook, ...). Bare pods: a Deployment is only refused at the ReplicaSet.
Evidence also lists which namespaces pull from which registries, with or without pull
credentials (secret names only).
"""
from kubeprobe import inventory
from kubeprobe.outcome import Observation
from kubeprobe.workloads import (UNTRUSTED_IMAGE, create_pod, pod_manifest, positive_control,
                                 restricted_container)

TARGETS = "apiserver"


def run(ctx, target, field="containers", image=UNTRUSTED_IMAGE):
    failed_control = positive_control(ctx)
    if failed_control:
        return failed_control
    body = pod_manifest(ctx, ctx.unique_name("untrusted"))
    if field == "initContainers":
        body["spec"]["initContainers"] = [restricted_container("init", image)]
    else:
        body["spec"]["containers"][0]["image"] = image
    what = f"create a pod with {image} in {field}"
    created, refused = create_pod(ctx, what, body)
    observation = refused or Observation.succeeded(
        f"{what}: the API server stored pod {created.metadata.namespace}/"
        f"{created.metadata.name}", image=image, field=field)
    observation.evidence["registries_in_use"] = inventory.registry_inventory(
        *inventory.collect(ctx.kube))
    return observation
