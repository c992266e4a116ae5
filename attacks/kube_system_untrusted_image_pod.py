"""Create a pod in kube-system with an image outside the kube-system allowlist (intrusive:
it writes into kube-system; removed at once).

SUCCEEDED: the API server stored the pod in kube-system.
BLOCKED:   admission refused it.
"""
from kubeprobe.outcome import Observation
from kubeprobe.workloads import UNTRUSTED_IMAGE, create_pod, pod_manifest

TARGETS = "apiserver"


def run(ctx, target, image=UNTRUSTED_IMAGE):
    what = f"create a pod with {image} in kube-system"
    created, refused = create_pod(ctx, what, pod_manifest(ctx, ctx.unique_name("ks"), image),
                                  namespace="kube-system")
    return refused or Observation.succeeded(f"{what}: the API server stored it", image=image)
