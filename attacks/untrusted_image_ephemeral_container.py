"""Add an ephemeral container with an untrusted image to a running-policy-compliant pod
(the `kubectl debug` path, which bypasses checks written only for pod creation).

SUCCEEDED: the API server accepted the ephemeral container.
BLOCKED:   admission refused the pods/ephemeralcontainers update.
"""
from kubernetes.client.rest import ApiException

from kubeprobe.apiwire import classify_api_error
from kubeprobe.outcome import Observation
from kubeprobe.workloads import UNTRUSTED_IMAGE, create_pod, pod_manifest, positive_control

TARGETS = "apiserver"


def run(ctx, target, image=UNTRUSTED_IMAGE):
    failed_control = positive_control(ctx)
    if failed_control:
        return failed_control
    host, refused = create_pod(ctx, "create the pod to debug",
                               pod_manifest(ctx, ctx.unique_name("debugged")))
    if refused:
        return Observation.inconclusive(f"could not create the pod to debug: {refused.summary}")
    name, namespace = host.metadata.name, host.metadata.namespace
    patch = {"spec": {"ephemeralContainers": [{
        "name": "debugger", "image": image, "command": ["sh"], "stdin": True, "tty": True}]}}
    what = f"add an ephemeral container {image} to {namespace}/{name}"
    try:
        ctx.kube.core.patch_namespaced_pod_ephemeralcontainers(
            name, namespace, patch, _request_timeout=ctx.kube.timeout)
    except ApiException as exc:
        return classify_api_error(exc, what)
    return Observation.succeeded(f"{what}: accepted", image=image)
