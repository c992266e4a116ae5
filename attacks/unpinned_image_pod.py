"""Create a bare Pod from a trusted registry whose image is NOT pinned by sha256 digest
(a tag can be moved to other content).

SUCCEEDED: the API server stored the pod.
BLOCKED:   admission refused it.
"""
from kubeprobe.outcome import Observation
from kubeprobe.workloads import TRUSTED_UNPINNED_IMAGE, create_pod, pod_manifest, positive_control

TARGETS = "apiserver"


def run(ctx, target, image=TRUSTED_UNPINNED_IMAGE):
    failed_control = positive_control(ctx)
    if failed_control:
        return failed_control
    what = f"create a pod with the unpinned image {image}"
    created, refused = create_pod(ctx, what, pod_manifest(ctx, ctx.unique_name("unpinned"),
                                                          image))
    return refused or Observation.succeeded(f"{what}: the API server stored it", image=image)
