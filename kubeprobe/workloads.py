"""Throwaway API objects for API-level attacks: built labelled with the run id, their undo
record (journal and deletion) registered before creation, and every API refusal classified
by kubeprobe.apiwire."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeprobe.apiwire import classify_api_error
from kubeprobe.context import RUN_ID_LABEL, AttackContext, Unavailable
from kubeprobe.journal import ObjectRef
from kubeprobe.outcome import Observation
from kubeprobe.waiting import wait_for

UNTRUSTED_IMAGE = "evil.example.invalid/kubeprobe/untrusted:latest"
# A trusted repository with a well-formed digest. It only has to pass admission: the pod is
# deleted before anything could pull it (nothing can be pulled here anyway).
TRUSTED_PINNED_IMAGE = ("registry.k8s.io/pause@sha256:"
                        + hashlib.sha256(b"kubeprobe positive control").hexdigest())


def restricted_container(name: str, image: str) -> dict[str, Any]:
    """A container that satisfies Pod Security `restricted`, so only the property under
    test can be the reason for a denial."""
    return {"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["/pause"],
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "runAsUser": 65532, "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}}}


def pod_manifest(ctx: AttackContext, name: str, image: str = TRUSTED_PINNED_IMAGE,
                 **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": ctx.labels},
            "spec": {"containers": [restricted_container("main", image)],
                     "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 0, **spec}}
    return body


def create(ctx: AttackContext, what: str, namespace: str | None, body: dict,
           create_fn: Callable[..., Any]) -> tuple[Any, Observation | None]:
    """Create an object with its undo record (journal and deletion) registered first.
    Returns (object, None) when the API server stored it, or (None, Observation) when it
    refused (classified). The body is stamped with the run id label (what a sweep finds)."""
    ref = ObjectRef.of(stamped(ctx, body), namespace)
    ctx.defer_undo(ref)
    create_args = (namespace, body) if namespace else (body,)
    try:
        created = create_fn(*create_args, _request_timeout=ctx.kube.timeout)
    except ApiException as exc:
        return None, classify_api_error(exc, what)
    ctx.note(f"the API server stored {ref.kind} {ref.where}")
    return created, None


def stamped(ctx: AttackContext, body: dict) -> dict:
    """The manifest with the run id label (every object a run creates carries it)."""
    body.setdefault("metadata", {}).setdefault("labels", {})[RUN_ID_LABEL] = ctx.run_id
    return body


def create_pod(ctx: AttackContext, what: str, body: dict,
               namespace: str | None = None) -> tuple[Any, Observation | None]:
    namespace = namespace or ctx.namespace()
    return create(ctx, what, namespace, body, ctx.kube.core.create_namespaced_pod)


def trusted_image(ctx: AttackContext) -> str:
    """The image a positive twin uses: trusted and digest-pinned (--trusted-image on an
    existing cluster whose policy trusts other registries)."""
    return ctx.trusted_image or TRUSTED_PINNED_IMAGE


def unpinned(image: str) -> str:
    """The same repository by tag instead of digest (`repo@sha256:...` -> `repo:latest`)."""
    repository = image.split("@", 1)[0]
    return repository if ":" in repository.rsplit("/", 1)[-1] else f"{repository}:latest"


def impersonating(ctx: AttackContext, user: str, group: str) -> client.ApiClient:
    """An API client that acts as `user` in `group` (needs the runner's impersonate right)."""
    api = ctx.kube.api_client
    configuration = api.configuration
    impersonated = client.ApiClient(configuration)
    impersonated.set_default_header("Impersonate-User", user)
    impersonated.set_default_header("Impersonate-Group", group)
    ctx.note(f"identity: impersonating {user} (group {group}) with the runner's credentials")
    return impersonated


# Container states that will not resolve by waiting: stop at once instead of at the deadline.
STUCK = {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName",
         "CreateContainerConfigError", "CreateContainerError"}


def wait_for_pod(ctx: AttackContext, namespace: str, name: str, phases: tuple[str, ...],
                 deadline_s: float) -> str | None:
    """The pod's phase once it is one of `phases`; `Waiting: <reason>` when a container is
    stuck (image missing, bad config); None if the deadline passed first."""
    def reached():
        status = ctx.kube.core.read_namespaced_pod(
            name, namespace, _request_timeout=ctx.kube.timeout).status
        if status.phase in phases:
            return status.phase
        for container in status.container_statuses or []:
            waiting = container.state.waiting if container.state else None
            if waiting is not None and waiting.reason in STUCK:
                return f"Waiting: {waiting.reason}: {waiting.message or ''}".strip(": ")
        return None
    try:
        return wait_for(reached, deadline_s, f"pod {namespace}/{name} to be {'/'.join(phases)}",
                        interval_s=0.5)
    except TimeoutError:
        return None


# --- the probe image's pull secret (--probe-image-pull-secret) -----------------------------

PULL_SECRET_ENV = "KUBEPROBE_PROBE_IMAGE_PULL_SECRET"


def read_docker_config(path: str | Path) -> tuple[bytes | None, str | None]:
    """(the file's bytes, None) when `path` is a docker config.json with an `auths` object
    (what `docker login` writes), else (None, why) in one line that never shows the content."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or type(exc).__name__})"
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, "is not JSON (a docker config.json, as `docker login` writes it)"
    if not isinstance(doc, dict) or not isinstance(doc.get("auths"), dict) or not doc["auths"]:
        return None, ("has no `auths` object naming a registry (a docker config.json, as "
                      "`docker login` writes it)")
    return raw, None


@dataclass
class ProbeImagePullSecret:
    """A `kubernetes.io/dockerconfigjson` Secret, made from --probe-image-pull-secret, in
    each namespace where the run starts a pod with the probe image: once per namespace per
    run (controls run concurrently: a lock), its undo record registered through `defer_undo`
    (the suite's run-wide journalled cleanup) before it is created, labelled with the run id
    (what `kubeprobe sweep` finds). The content is never logged, only the Secret's name."""
    config: bytes = field(repr=False)
    source: str
    run_id: str
    _made: set = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return f"kp-pull-{self.run_id}"[:63].rstrip("-")

    def manifest(self, namespace: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": self.name, "namespace": namespace,
                             "labels": {RUN_ID_LABEL: self.run_id,
                                        "kubeprobe.io/role": "probe-image-pull"}},
                "data": {".dockerconfigjson": base64.b64encode(self.config).decode()}}

    def describe(self, namespace: str) -> str:
        return (f"the probe image is pulled with the pull secret {namespace}/{self.name} "
                f"(from --probe-image-pull-secret)")

    def ensure(self, kube, namespace: str, defer_undo: Callable[[Any], None]) -> str:
        """The Secret's name in `namespace`, created on first use. Unavailable (one line,
        no content) when the API server refuses it."""
        with self._lock:
            if namespace in self._made:
                return self.name
            defer_undo(ObjectRef("v1", "Secret", namespace, self.name))
            try:
                kube.core.create_namespaced_secret(namespace, self.manifest(namespace),
                                                   _request_timeout=kube.timeout)
            except ApiException as exc:
                if exc.status != 409:
                    raise Unavailable(f"the probe image's pull secret {namespace}/{self.name} "
                                      f"could not be created: {exc.status} {exc.reason}"
                                      ) from None
            self._made.add(namespace)
            return self.name


def probe_image_pod_spec(pull_secret: ProbeImagePullSecret | None, kube, namespace: str,
                         defer_undo: Callable[[Any], None]) -> dict[str, Any]:
    """What a pod that runs the probe image adds to its spec in `namespace`: its
    imagePullSecrets when the run has one (the Secret made there first), else nothing."""
    if pull_secret is None:
        return {}
    return {"imagePullSecrets": [{"name": pull_secret.ensure(kube, namespace, defer_undo)}]}
