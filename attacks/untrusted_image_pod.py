"""Create a bare Pod whose image comes from a registry outside the trusted list (in the
containers or the initContainers).

Differential proof: the twin is the same pod with the trusted, digest-pinned image in that
place; it must be admitted (a deny-everything policy proves nothing). Both are dry runs, in
the run's namespace and in every workload namespace tried. Bare pods: a Deployment is only
refused at the ReplicaSet (ADMISSION-05).

SUCCEEDED: the untrusted pod is admitted.
BLOCKED:   admission refused it and admitted the twin; the evidence names the mechanism.
Evidence also lists which namespaces pull from which registries, with or without pull
credentials (secret names only).
"""
from kubeprobe import inventory
from kubeprobe.admission import differential, pod_write, with_sweep
from kubeprobe.workloads import UNTRUSTED_IMAGE, pod_manifest, restricted_container, trusted_image

TARGETS = "apiserver"


def _pod(ctx, field, image):
    body = pod_manifest(ctx, ctx.unique_name("probe"), trusted_image(ctx))
    if field == "initContainers":
        body["spec"]["initContainers"] = [restricted_container("init", image)]
    else:
        body["spec"]["containers"][0]["image"] = image
    return body


def image_pair(ctx, field, image, namespace):
    return (pod_write(ctx, f"a pod with the trusted image in {field}",
                      _pod(ctx, field, trusted_image(ctx)), namespace),
            pod_write(ctx, f"a pod with {image} in {field}", _pod(ctx, field, image),
                      namespace))


def run(ctx, target, field="containers", image=UNTRUSTED_IMAGE):
    property_under_test = f"the untrusted image {image} in {field}"
    observation, _ = differential(ctx, property_under_test,
                                  *image_pair(ctx, field, image, ctx.namespace()))
    observation = with_sweep(ctx, observation, property_under_test,
                             lambda namespace: image_pair(ctx, field, image, namespace))
    observation.evidence["registries_in_use"] = inventory.registry_inventory(
        *inventory.collect(ctx.kube))
    return observation
