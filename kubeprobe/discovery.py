"""Endpoints discovered from the cluster itself, so kind, the lab and staging need no config.

- nodes: InternalIP and the kubelet port from Node status (`daemonEndpoints.kubeletEndpoint`)
- etcd: client and peer URLs from the etcd static pod in kube-system (`component=etcd`),
  the label kubeadm and kind put on it; a managed control plane shows none.
- API server: the kubeconfig's server URL (`apiserver`: what API-client attacks use), and
  for network-level attacks (`apiserver_network`) also the API server's own endpoints: the
  `default/kubernetes` Service's EndpointSlices and the kube-apiserver static pods'
  --advertise-address/--secure-port. A kubeconfig URL that is none of these is a front end
  (load balancer, authenticating proxy): its answers are named as the front end's.

A component that is present but yields no reachable endpoint (etcd configured through
--config-file or listening on loopback only, nodes without an address) is recorded in
`unreachable`: the control is an ERROR with the reason. `missing` (SKIP) is only for a
component that is really absent (a managed control plane).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kubernetes.client.rest import ApiException

from kubeprobe.context import RUN_ID_LABEL
from kubeprobe.kube import Kube

ETCD_CLIENT_FLAGS = ("--advertise-client-urls", "--listen-client-urls")
# Plaintext listeners are always worth attacking, advertised or not.
ETCD_PLAINTEXT_FLAGS = ("--listen-client-urls", "--listen-client-http-urls")
ETCD_PEER_FLAGS = ("--initial-advertise-peer-urls", "--listen-peer-urls")
KINDS = ("etcd_client", "etcd_peer", "node", "apiserver", "apiserver_network", "registry")
FRONT_END = "front end"        # Endpoint.name of a kubeconfig URL that is not the API server's
NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


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
    missing: dict[str, str] = field(default_factory=dict)      # kind -> why (absent: SKIP)
    unreachable: dict[str, str] = field(default_factory=dict)  # kind -> why (present: ERROR)
    notes: list[str] = field(default_factory=list)             # what could not be looked at

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
    _discover_apiserver(kube, found)
    node_ips = _discover_nodes(kube, found)
    _discover_etcd(kube, found, node_ips)
    return found


def _discover_apiserver(kube: Kube, found: Endpoints) -> None:
    host, port = kube.server_host_port
    found.add(Endpoint("apiserver", "apiserver", host, port, "kubeconfig server URL"))
    own: list[Endpoint] = []
    try:
        slices = kube.discovery.list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=kubernetes",
            _request_timeout=kube.timeout).items
    except ApiException as exc:  # no right to list them, or no such API: the flags remain
        found.notes.append(f"the kubernetes Service's EndpointSlices could not be listed "
                           f"(HTTP {exc.status} {exc.reason})")
        slices = []
    for endpoint_slice in slices:
        ports = [p.port for p in endpoint_slice.ports or [] if p.port]
        for item in endpoint_slice.endpoints or []:
            for address in item.addresses or []:
                for p in ports:
                    own.append(Endpoint("apiserver_network", "apiserver", address, p,
                                        "default/kubernetes EndpointSlice"))
    for pod, flags in pod_flags(kube, "kube-apiserver").items():
        address = flags.get("--advertise-address")
        if address and not _is_loopback(address):
            own.append(Endpoint("apiserver_network", "apiserver", address,
                                int(flags.get("--secure-port") or 6443),
                                f"kube-system/{pod} --advertise-address"))
    own_addresses = {e.address for e in own}
    front = Endpoint("apiserver_network", "apiserver", host, port, "kubeconfig server URL")
    if own and front.address not in own_addresses and not _resolves_to(host, port, own):
        front = Endpoint("apiserver_network", FRONT_END, host, port,
                         "kubeconfig server URL (not one of the API server's own endpoints)")
    for endpoint in [front, *own]:
        found.add(endpoint)


def _resolves_to(host: str, port: int, own: list[Endpoint]) -> bool:
    """A DNS name in the kubeconfig that resolves to one of the API server's addresses."""
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port,
                                                               proto=socket.IPPROTO_TCP)}
    except OSError:
        return False
    return any(e.host in addresses and e.port == port for e in own)


def _discover_nodes(kube: Kube, found: Endpoints) -> dict[str, str]:
    node_ips: dict[str, str] = {}
    # Throwaway Nodes of kubeprobe runs (NODERESTRICTION-*) have no kubelet behind them.
    nodes = kube.core.list_node(label_selector=f"!{RUN_ID_LABEL}",
                                _request_timeout=kube.timeout).items
    without_address = []
    for node in nodes:
        addresses = {a.type: a.address for a in node.status.addresses or []}
        address_type = next((t for t in NODE_ADDRESS_TYPES if addresses.get(t)), None)
        if address_type is None:
            without_address.append(node.metadata.name)
            continue
        node_ips[node.metadata.name] = addresses[address_type]
        endpoint = node.status.daemon_endpoints.kubelet_endpoint
        found.add(Endpoint("node", node.metadata.name, addresses[address_type],
                           endpoint.port or 10250,
                           f"Node status {address_type} + daemonEndpoints.kubeletEndpoint"))
    if without_address and not found.of("node"):
        found.unreachable["node"] = (f"node(s) {', '.join(without_address)} report no "
                                     f"{' or '.join(NODE_ADDRESS_TYPES)}: the kubelet cannot "
                                     "be addressed")
    elif not nodes:
        found.missing["node"] = "the cluster lists no nodes"
    return node_ips


def _discover_etcd(kube: Kube, found: Endpoints, node_ips: dict[str, str]) -> None:
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
        return
    for kind, flag_names in (("etcd_client", ETCD_CLIENT_FLAGS), ("etcd_peer", ETCD_PEER_FLAGS)):
        if not found.of(kind):
            found.unreachable[kind] = _why_no_etcd_url(pods, found.etcd_flags, flag_names)


def _why_no_etcd_url(pods, etcd_flags: dict[str, dict[str, str]],
                     flag_names: tuple[str, ...]) -> str:
    names = ", ".join(f"kube-system/{p.metadata.name}" for p in pods)
    flags = next(iter(etcd_flags.values()), {})
    if "--config-file" in flags:
        return (f"etcd runs ({names}) but is configured through --config-file "
                f"{flags['--config-file']}: its URLs are not visible through the API")
    urls = "; ".join(f"{n}={flags[n]}" for n in flag_names if flags.get(n))
    if urls:
        return (f"etcd runs ({names}) but listens/advertises on loopback only ({urls}): no "
                "address an attacker off the node could use was found")
    return f"etcd runs ({names}) but its flags name no URL ({', '.join(flag_names)})"


def pod_flags(kube: Kube, component: str) -> dict[str, dict[str, str]]:
    """kube-system static pod name -> its first container's `--flag=value` arguments."""
    pods = kube.core.list_namespaced_pod("kube-system", label_selector=f"component={component}",
                                         _request_timeout=kube.timeout).items
    return {pod.metadata.name: parse_flags((pod.spec.containers[0].command or [])
                                           + (pod.spec.containers[0].args or []))
            for pod in pods}
