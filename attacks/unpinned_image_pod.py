"""Create a bare Pod from a trusted registry whose image is NOT pinned by sha256 digest
(a tag can be moved to other content).

Differential proof: the twin is the same pod with the same repository pinned by digest; it
must be admitted. Dry runs, in the run's namespace and every workload namespace tried.

SUCCEEDED: the unpinned pod is admitted.
BLOCKED:   admission refused it and admitted the pinned twin.
"""
from kubeprobe.admission import differential, pod_write, with_sweep
from kubeprobe.workloads import pod_manifest, trusted_image, unpinned

TARGETS = "apiserver"


def pin_pair(ctx, namespace):
    pinned = trusted_image(ctx)
    return (pod_write(ctx, f"a pod with the pinned image {pinned}",
                      pod_manifest(ctx, ctx.unique_name("probe"), pinned), namespace),
            pod_write(ctx, f"a pod with the unpinned image {unpinned(pinned)}",
                      pod_manifest(ctx, ctx.unique_name("probe"), unpinned(pinned)), namespace))


def run(ctx, target):
    property_under_test = "an image reference without a sha256 digest"
    observation, _ = differential(ctx, property_under_test, *pin_pair(ctx, ctx.namespace()))
    return with_sweep(ctx, observation, property_under_test,
                      lambda namespace: pin_pair(ctx, namespace))
