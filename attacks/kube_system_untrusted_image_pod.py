"""Create a pod in kube-system with an image outside the kube-system allowlist (intrusive:
it targets kube-system).

Differential proof: the twin is the same restricted pod with an image kube-system already
runs (taken from a running kube-system pod, so the cluster's own allowlist admits it). Both
are dry runs: nothing is written to kube-system. Where the attack is admitted and the
profile expects an alert, it is then created for real (and deleted) so the detector has a
pod to see.

SUCCEEDED: the API server admitted the pod in kube-system.
BLOCKED:   admission refused it and admitted the twin.
"""
from kubeprobe.admission import differential, pod_write
from kubeprobe.context import Unavailable
from kubeprobe.outcome import Observation, Outcome
from kubeprobe.workloads import UNTRUSTED_IMAGE, create_pod, pod_manifest

TARGETS = "apiserver"
NAMESPACE = "kube-system"


def kube_system_image(ctx):
    """An image kube-system runs today (kube-proxy's first, else any running pod's)."""
    pods = ctx.kube.core.list_namespaced_pod(NAMESPACE, _request_timeout=ctx.kube.timeout).items
    running = [p for p in pods if p.status and p.status.phase == "Running"]
    running.sort(key=lambda p: "kube-proxy" not in p.metadata.name)
    for pod in running:
        for container in pod.spec.containers:
            return container.image
    raise Unavailable("no running pod in kube-system to take an allowlisted image from")


def run(ctx, target, image=UNTRUSTED_IMAGE):
    allowed = kube_system_image(ctx)
    observation, pair = differential(
        ctx, f"the image {image}",
        pod_write(ctx, f"a pod with {allowed} (already running in kube-system)",
                  pod_manifest(ctx, ctx.unique_name("ks"), allowed), NAMESPACE),
        pod_write(ctx, f"a pod with {image}", pod_manifest(ctx, ctx.unique_name("ks"), image),
                  NAMESPACE))
    if observation.outcome is Outcome.SUCCEEDED and pair.attack.dry_run and ctx.alert_expected:
        what = f"create a pod with {image} in {NAMESPACE}"
        created, refused = create_pod(ctx, what, pod_manifest(ctx, ctx.unique_name("ks"), image),
                                      namespace=NAMESPACE)
        if created is not None:
            observation = Observation.succeeded(f"{what}: admitted as a dry run, then stored "
                                                f"{created.metadata.name}", image=image,
                                                **observation.evidence)
    return observation
