"""Access to the target's API through the official client, with a timeout on every call."""
from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubeprobe.context import RUN_ID_LABEL
from kubeprobe.errors import one_line
from kubeprobe.journal import KINDS, ObjectRef


# What a broken kubeconfig raises inside the client's loader.
_KUBECONFIG_ERRORS = (config.ConfigException, OSError, ValueError, TypeError, KeyError,
                      AttributeError, yaml.YAMLError)


class TargetError(Exception):
    """The suite cannot run against this target. The message is the one line shown."""


class ApiUnavailable(Exception):
    """The API server stopped answering (connection refused/reset/timeout)."""


def is_connection_failure(exc: BaseException) -> bool:
    return isinstance(exc, (urllib3.exceptions.MaxRetryError, urllib3.exceptions.ProtocolError,
                            urllib3.exceptions.TimeoutError, ConnectionError, TimeoutError))


def no_answer(exc: BaseException) -> bool:
    """The API server did not answer at all: a transport failure, or the client's status-0
    ApiException (TLS failure, a websocket that could not connect or was cut)."""
    return is_connection_failure(exc) or (isinstance(exc, ApiException) and not exc.status)


def _read_kubeconfig(kubeconfig: Path) -> None:
    """A kubeconfig the client's loader would choke on (not YAML, not a mapping) gets one
    line of its own instead of the loader's internals ('str' object does not support ...)."""
    try:
        doc = yaml.safe_load(Path(kubeconfig).read_text())
    except OSError as exc:
        raise TargetError(f"cannot read kubeconfig {kubeconfig}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TargetError(f"kubeconfig {kubeconfig} is not a kubeconfig: not text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise TargetError(f"kubeconfig {kubeconfig} is not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(doc, dict):
        raise TargetError(f"kubeconfig {kubeconfig} is not a kubeconfig: expected a YAML "
                          f"mapping with clusters, users and contexts, got "
                          f"{type(doc).__name__ if doc is not None else 'an empty file'}")


@dataclass
class Kube:
    api_client: client.ApiClient
    context: str | None
    kubeconfig: Path | None
    timeout: tuple[float, float] = (3.0, 15.0)
    # Set once the API server stopped answering: every later call (the cleanups still
    # attempted) gets a short deadline, whatever deadline its caller captured.
    gone: bool = False
    silence: str | None = None   # what the last unanswered /version said

    @classmethod
    def connect(cls, kubeconfig: Path | None, context: str | None,
                connect_timeout: float = 3.0) -> "Kube":
        """Load the kubeconfig and check the API answers; TargetError (one line) otherwise."""
        where = str(kubeconfig) if kubeconfig else "the default kubeconfig"
        if kubeconfig is not None and not Path(kubeconfig).is_file():
            raise TargetError(f"kubeconfig {kubeconfig} does not exist")
        if kubeconfig is not None:
            _read_kubeconfig(kubeconfig)
        try:
            contexts, _ = config.list_kube_config_contexts(config_file=str(kubeconfig)
                                                           if kubeconfig else None)
        except _KUBECONFIG_ERRORS as exc:
            raise TargetError(f"cannot read kubeconfig {where}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        names = [c["name"] for c in contexts or []]
        if context and context not in names:
            raise TargetError(f"context {context!r} is not in {where} "
                              f"(contexts: {', '.join(names) or 'none'})")
        configuration = client.Configuration()
        try:
            config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None,
                                    context=context, client_configuration=configuration)
        except _KUBECONFIG_ERRORS as exc:
            raise TargetError(f"bad kubeconfig {where}: {exc}") from None
        # Before the client exists: its connection pools read it once. One attempt per call,
        # so a dead or filtered API server costs one connect deadline, not four.
        configuration.retries = False
        kube = cls(client.ApiClient(configuration), context, kubeconfig,
                   (connect_timeout, 15.0))
        kube._bound_requests()
        try:
            kube.server_version()
        except ApiException as exc:
            raise TargetError(f"API server {kube.server_url} refused the runner's credentials: "
                              f"HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:  # noqa: BLE001 - any transport failure means "no cluster"
            if is_connection_failure(exc):
                raise TargetError(f"no cluster: API server {kube.server_url} did not answer "
                                  f"({type(exc).__name__})") from None
            raise
        return kube

    def _bound_requests(self) -> None:
        """Every REST call gets at least the connect deadline (a call made without one can
        no longer wait on a filtered address for minutes), and once the API server is gone,
        short connect and read deadlines."""
        rest = self.api_client.rest_client
        request = rest.request

        def bounded(method, url, *args, _request_timeout=None, **kwargs):
            if self.gone:
                _request_timeout = self.timeout
            elif _request_timeout is None:
                _request_timeout = (self.timeout[0], None)
            return request(method, url, *args, _request_timeout=_request_timeout, **kwargs)
        rest.request = bounded

    def mark_gone(self, deadline_s: float = 1.0) -> None:
        """The API server stopped answering: from now on every call waits at most
        `deadline_s` (or the connect timeout, if shorter) to connect and to read."""
        short = min(self.timeout[0], deadline_s)
        self.gone, self.timeout = True, (short, short)

    @property
    def server_url(self) -> str:
        return self.api_client.configuration.host

    @property
    def server_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.server_url)
        return parts.hostname, parts.port or 443

    @property
    def cluster_ca_pem(self) -> bytes | None:
        path = self.api_client.configuration.ssl_ca_cert
        return Path(path).read_bytes() if path else None

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    def exec_core(self) -> client.CoreV1Api:
        """A CoreV1Api on an ApiClient of its own, for `kubernetes.stream.stream` (exec):
        stream() swaps the client's call_api for a websocket one while it runs, which on the
        shared client would turn every concurrent control's request into a websocket
        handshake."""
        return client.CoreV1Api(client.ApiClient(self.api_client.configuration))

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api_client)

    @property
    def discovery(self) -> client.DiscoveryV1Api:
        return client.DiscoveryV1Api(self.api_client)

    @property
    def certificates(self) -> client.CertificatesV1Api:
        return client.CertificatesV1Api(self.api_client)

    def server_version(self) -> dict:
        # A short read deadline: /version is cheap, and a tarpit must not stall the run.
        info = client.VersionApi(self.api_client).get_code(
            _request_timeout=(self.timeout[0], 2 * self.timeout[0]))
        return {"gitVersion": info.git_version, "platform": info.platform}

    def namespace_uid(self, name: str) -> str:
        """The namespace's UID: kube-system's names the cluster (a rebuilt cluster under the
        same address has another). 'unknown (<why>)' when it cannot be read."""
        try:
            namespace = self.core.read_namespace(name, _request_timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - the report says why it is unknown
            return f"unknown ({one_line(exc)})"
        return namespace.metadata.uid or "unknown (no uid in the answer)"

    def runner_identity(self) -> str:
        """Who the API server says the runner's own credentials are (SelfSubjectReview,
        authentication.k8s.io/v1): 'name (groups: ...)', or 'unknown (<why>)'."""
        try:
            review = client.AuthenticationV1Api(self.api_client).create_self_subject_review(
                client.V1SelfSubjectReview(), _request_timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - the report says why it is unknown
            return f"unknown (SelfSubjectReview: {one_line(exc)})"
        user = review.status.user_info if review.status else None
        if user is None or not user.username:
            return "unknown (SelfSubjectReview answered without a username)"
        return f"{user.username} (groups: {', '.join(user.groups or []) or 'none'})"

    def alive(self, attempts: int = 2) -> bool:
        """Does the API server still answer (any HTTP status counts as an answer)? Asked up
        to `attempts` times: one slow /version on a loaded host is not a server gone. Why it
        did not answer is kept in `silence` for the line the run ends with."""
        for _ in range(attempts):
            try:
                self.server_version()
            except ApiException as exc:
                if exc.status:
                    return True
                self.silence = f"ApiException: {str(exc)[:200]}"
            except Exception as exc:  # noqa: BLE001 - no answer, whatever the transport said
                self.silence = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                return True
        return False

    def delete_object(self, ref) -> bool:
        """Delete one object named by a kubeprobe.journal.ObjectRef at once (no grace,
        dependents in the background); True if it was there, False if already gone."""
        kind = KINDS[ref.kind]
        delete = getattr(getattr(client, kind.api)(self.api_client), kind.delete)
        args = (ref.name, ref.namespace) if kind.namespaced else (ref.name,)
        options = {"propagation_policy": "Background"}
        if ref.kind != "Namespace":
            options["grace_period_seconds"] = 0
        try:
            delete(*args, **options, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def list_labelled(self, kind_name: str, selector: str) -> list[tuple]:
        """(ObjectRef, run id, terminating) for every object of a journal kind whose labels
        match `selector`, in every namespace."""
        kind = KINDS[kind_name]
        listing = getattr(getattr(client, kind.api)(self.api_client), kind.list_all)
        found = []
        for item in listing(label_selector=selector, _request_timeout=self.timeout).items:
            meta = item.metadata
            ref = ObjectRef(kind.api_version, kind.kind,
                            meta.namespace if kind.namespaced else None, meta.name)
            found.append((ref, (meta.labels or {}).get(RUN_ID_LABEL, ""),
                          meta.deletion_timestamp is not None))
        return found

    def kubelet_configz(self, node: str) -> dict:
        """The kubelet's live configuration through the API server's nodes/proxy."""
        # Raw bytes: the client would otherwise hand back the Python repr of the JSON.
        response = self.core.connect_get_node_proxy_with_path(
            node, "configz", _preload_content=False, _request_timeout=self.timeout)
        return json.loads(response.data).get("kubeletconfig", {})

    def kubelet_metrics(self, node: str) -> str:
        """The kubelet's /metrics (Prometheus text) through the API server's nodes/proxy."""
        response = self.core.connect_get_node_proxy_with_path(
            node, "metrics", _preload_content=False, _request_timeout=self.timeout)
        return response.data.decode("utf-8", "replace")


@dataclass
class RunNamespace:
    """The run's throwaway namespace: created on first use, its undo record (journal and
    cleanup) registered first."""
    kube: Kube
    run_id: str
    defer_undo: Callable[[ObjectRef], None]
    name: str = field(init=False)
    _created: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.name = f"kubeprobe-{self.run_id}"

    def ensure(self) -> str:
        with self._lock:  # controls run concurrently: one creation, whoever asks first
            return self._ensure()

    def _ensure(self) -> str:
        if not self._created:
            self.defer_undo(ObjectRef("v1", "Namespace", None, self.name))
            # No Pod Security labels of our own: the cluster's defaults are what is tested.
            body = client.V1Namespace(metadata=client.V1ObjectMeta(
                name=self.name, labels={RUN_ID_LABEL: self.run_id}))
            self.kube.core.create_namespace(body, _request_timeout=self.kube.timeout)
            self._created = True
        return self.name


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
