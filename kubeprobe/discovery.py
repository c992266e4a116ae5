"""Endpoints discovered from the cluster itself, so kind, the lab and staging need no config.

- nodes: InternalIP and the kubelet port from Node status (`daemonEndpoints.kubeletEndpoint`)
- etcd: client and peer URLs from the etcd static pod in kube-system (`component=etcd`),
  the label kubeadm and kind put on it; a managed control plane shows none.
- API server: the kubeconfig's server URL.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kubeprobe.kube import Kube

ETCD_CLIENT_FLAGS = ("--advertise-client-urls", "--listen-client-urls")
# Plaintext listeners are always worth attacking, advertised or not.
ETCD_PLAINTEXT_FLAGS = ("--listen-client-urls", "--listen-client-http-urls")
ETCD_PEER_FLAGS = ("--initial-advertise-peer-urls", "--listen-peer-urls")
KINDS = ("etcd_client", "etcd_peer", "node", "apiserver")


@dataclass(frozen=True)
class Endpoint:
    kind: str       # one of KINDS
    name: str       # node / etcd member / "apiserver"
    host: str
    port: int
    source: str     # how it was found, for the evidence

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class Endpoints:
    by_kind: dict[str, list[Endpoint]] = field(default_factory=lambda: {k: [] for k in KINDS})
    etcd_flags: dict[str, dict[str, str]] = field(default_factory=dict)  # pod -> flags
    missing: dict[str, str] = field(default_factory=dict)               # kind -> why

    def of(self, kind: str) -> list[Endpoint]:
        if kind not in KINDS:
            raise KeyError(f"unknown endpoint kind {kind!r}")
        return self.by_kind[kind]

    def add(self, endpoint: Endpoint) -> None:
        if all(e.address != endpoint.address for e in self.by_kind[endpoint.kind]):
            self.by_kind[endpoint.kind].append(endpoint)


def parse_flags(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments (as kubeadm writes them) to a dict."""
    flags = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            flags[name] = value
    return flags


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def etcd_urls(flags: dict[str, str], names: tuple[str, ...],
              host_ip: str | None = None) -> list[tuple[str, int]]:
    """Non-loopback host/port pairs from the first flag that yields any: an attacker outside
    the node cannot use 127.0.0.1. A wildcard listen address means the node's own IP."""
    for name in names:
        found = []
        for url in filter(None, flags.get(name, "").split(",")):
            parts = urlsplit(url.strip())
            host = parts.hostname
            if host in ("0.0.0.0", "::"):
                host = host_ip
            if host and not _is_loopback(host):
                found.append((host, parts.port or 2379))
        if found:
            return found
    return []


def discover(kube: Kube) -> Endpoints:
    found = Endpoints()
    host, port = kube.server_host_port
    found.add(Endpoint("apiserver", "apiserver", host, port, "kubeconfig server URL"))

    node_ips: dict[str, str] = {}
    for node in kube.core.list_node(_request_timeout=kube.timeout).items:
        ips = [a.address for a in node.status.addresses or [] if a.type == "InternalIP"]
        if ips:
            node_ips[node.metadata.name] = ips[0]
        endpoint = node.status.daemon_endpoints.kubelet_endpoint
        if ips:
            found.add(Endpoint("node", node.metadata.name, ips[0], endpoint.port or 10250,
                               "Node status InternalIP + daemonEndpoints.kubeletEndpoint"))
    if not found.of("node"):
        found.missing["node"] = "no node reports an InternalIP"

    pods = kube.core.list_namespaced_pod("kube-system", label_selector="component=etcd",
                                         _request_timeout=kube.timeout).items
    for pod in pods:
        container = next((c for c in pod.spec.containers if c.name == "etcd"),
                         pod.spec.containers[0])
        flags = parse_flags((container.command or []) + (container.args or []))
        found.etcd_flags[pod.metadata.name] = flags
        member = flags.get("--name", pod.metadata.name)
        # A wildcard listener means the node's address. A fresh mirror pod may not report
        # status.hostIP yet, so fall back to its node's InternalIP.
        host_ip = (pod.status.host_ip if pod.status else None) or node_ips.get(pod.spec.node_name)
        for h, p in etcd_urls(flags, ETCD_CLIENT_FLAGS, host_ip):
            found.add(Endpoint("etcd_client", member, h, p, f"kube-system/{pod.metadata.name} "
                                                           "--advertise-client-urls"))
        for flag in ETCD_PLAINTEXT_FLAGS:
            http_only = {flag: ",".join(u for u in flags.get(flag, "").split(",")
                                        if u.strip().startswith("http://"))}
            for h, p in etcd_urls(http_only, (flag,), host_ip):
                found.add(Endpoint("etcd_client", member, h, p,
                                   f"kube-system/{pod.metadata.name} {flag} (plain HTTP)"))
        for h, p in etcd_urls(flags, ETCD_PEER_FLAGS, host_ip):
            found.add(Endpoint("etcd_peer", member, h, p, f"kube-system/{pod.metadata.name} "
                                                         "--initial-advertise-peer-urls"))
    if not pods:
        why = "no etcd static pod (component=etcd) in kube-system: managed or external etcd"
        found.missing["etcd_client"] = found.missing["etcd_peer"] = why
    return found
