"""Add an ephemeral container with an untrusted image to a running-policy-compliant pod
(the `kubectl debug` path, which bypasses checks written only for pod creation).

Differential proof: the twin adds the same ephemeral container (restricted securityContext,
so Pod Security `restricted` has nothing to object to) with the trusted, digest-pinned
image; it must be admitted. Both updates of pods/ephemeralcontainers are dry runs; the pod
they target is created for real in the run's namespace (deleted at the end).

SUCCEEDED: the API server accepted the untrusted ephemeral container.
BLOCKED:   admission refused the pods/ephemeralcontainers update and admitted the twin.
"""
from kubeprobe.admission import Write, differential, summarise
from kubeprobe.outcome import Observation
from kubeprobe.workloads import (UNTRUSTED_IMAGE, create_pod, pod_manifest, restricted_container,
                                 trusted_image)

TARGETS = "apiserver"


def _debugger(ctx, pod, namespace, image, what):
    container = restricted_container("debugger", image)
    patch = {"spec": {"ephemeralContainers": [container]}}
    core, timeout = ctx.kube.core, ctx.kube.timeout
    return Write(what=f"{what} to {namespace}/{pod}", request=summarise(
                     {"kind": "Pod (ephemeralcontainers subresource)",
                      "metadata": {"name": pod}, "spec": patch["spec"]}),
                 send=lambda dry_run: core.patch_namespaced_pod_ephemeralcontainers(
                     pod, namespace, patch, dry_run=dry_run, _request_timeout=timeout))


def run(ctx, target, image=UNTRUSTED_IMAGE):
    host, refused = create_pod(ctx, "create the pod to debug",
                               pod_manifest(ctx, ctx.unique_name("debugged"),
                                            trusted_image(ctx)))
    if refused:
        return Observation.inconclusive(f"could not create the pod to debug: {refused.summary}",
                                        refusal=refused.to_json())
    name, namespace = host.metadata.name, host.metadata.namespace
    observation, _ = differential(
        ctx, f"the untrusted image {image} in an ephemeral container",
        _debugger(ctx, name, namespace, trusted_image(ctx),
                  "add an ephemeral container with the trusted image"),
        _debugger(ctx, name, namespace, image, f"add an ephemeral container {image}"))
    return observation
