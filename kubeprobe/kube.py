"""Access to the target's API through the official client, with a timeout on every call."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubeprobe.context import RUN_ID_LABEL


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


@dataclass
class Kube:
    api_client: client.ApiClient
    context: str | None
    kubeconfig: Path | None
    timeout: tuple[float, float] = (3.0, 15.0)

    @classmethod
    def connect(cls, kubeconfig: Path | None, context: str | None,
                connect_timeout: float = 3.0) -> "Kube":
        """Load the kubeconfig and check the API answers; TargetError (one line) otherwise."""
        where = str(kubeconfig) if kubeconfig else "the default kubeconfig"
        if kubeconfig is not None and not Path(kubeconfig).is_file():
            raise TargetError(f"kubeconfig {kubeconfig} does not exist")
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
        try:
            api_client = config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None, context=context)
        except _KUBECONFIG_ERRORS as exc:
            raise TargetError(f"bad kubeconfig {where}: {exc}") from None
        api_client.configuration.retries = False
        kube = cls(api_client, context, kubeconfig, (connect_timeout, 15.0))
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

    def alive(self) -> bool:
        try:
            self.server_version()
        except Exception:  # noqa: BLE001
            return False
        return True

    def kubelet_configz(self, node: str) -> dict:
        """The kubelet's live configuration through the API server's nodes/proxy."""
        # Raw bytes: the client would otherwise hand back the Python repr of the JSON.
        response = self.core.connect_get_node_proxy_with_path(
            node, "configz", _preload_content=False, _request_timeout=self.timeout)
        return json.loads(response.data).get("kubeletconfig", {})


@dataclass
class RunNamespace:
    """The run's throwaway namespace: created on first use, deletion registered first."""
    kube: Kube
    run_id: str
    defer: Callable[..., None]
    name: str = field(init=False)
    _created: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.name = f"kubeprobe-{self.run_id}"

    def ensure(self) -> str:
        if not self._created:
            self.defer(f"delete namespace {self.name}", self.delete)
            # No Pod Security labels of our own: the cluster's defaults are what is tested.
            body = client.V1Namespace(metadata=client.V1ObjectMeta(
                name=self.name, labels={RUN_ID_LABEL: self.run_id}))
            self.kube.core.create_namespace(body, _request_timeout=self.kube.timeout)
            self._created = True
        return self.name

    def delete(self) -> None:
        try:
            self.kube.core.delete_namespace(self.name, _request_timeout=self.kube.timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
