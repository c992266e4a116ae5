"""A refused TCP connection, judged together with what the API says about the component.

A refusal (TCP RST) only says that nothing accepted *this vantage's* connection: a component
restarting and a firewall REJECT rule answer exactly like a closed port. So:

- Where the control is about authentication (kubelet 10250, etcd client and peer ports), a
  refusal never passes: authentication was never exercised. The attempt is repeated once; when
  it is refused again, the component is checked through the API. Up and serving: a **network
  refusal** (a firewall rule between this vantage and the port), INCONCLUSIVE. Not shown up:
  INCONCLUSIVE, refused while the component is down or restarting.
- Where the control is about a port being closed (kubelet read-only port, healthz), the
  refusal is the proof only when the kubelet's own configuration, read through the API server,
  says that port is off. Configured open but refused: a network refusal, INCONCLUSIVE.

The checks are callables so that self-tests drive this logic with real refused sockets and a
stub check; with no API at all (self-tests, `ctx.kube is None`) nothing can be corroborated.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from kubeprobe.net import Exchange, Probe
from kubeprobe.outcome import Authority, Observation


@dataclass(frozen=True)
class ComponentStatus:
    """What the API shows about a component: `up` True (up and serving), False (shown not
    up) or None (cannot tell); `detail` is one line saying what was seen."""
    up: bool | None
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PortConfig:
    """What the component's configuration says about a port: `closed` True (off for this
    address), False (served here) or None (unreadable, or not the probed port)."""
    closed: bool | None
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


ComponentCheck = Callable[[], ComponentStatus]
PortConfigCheck = Callable[[], PortConfig]


def refused_twice(ctx, probe: Probe, exchange: Exchange, what: str, component: str,
                  check: ComponentCheck) -> tuple[Exchange, Observation | None]:
    """For an authentication control. Not refused: (exchange, None). Refused: the probe is
    repeated; if the repeat gets through, (repeat, None) and the caller judges the repeat;
    if it is refused too, an INCONCLUSIVE observation from the component's status."""
    if exchange.error != "refused":
        return exchange, None
    again = ctx.exchange(probe)
    if again.error != "refused":
        ctx.note(f"{what}: the first connection to {exchange.target} was refused, the second "
                 f"was not ({again.summary()}): judged on the second")
        return again, None
    status = check()
    evidence = {"refused_attempts": 2, "component": component,
                "component_status": status.detail, **status.evidence}
    if status.up:
        return again, Observation.inconclusive(
            f"network refusal: {what}: {again.target} refused this vantage twice while "
            f"{component} is up ({status.detail}); a firewall rule or REJECT between here and "
            "the port, so authentication was never exercised",
            network_refusal=True, **evidence)
    if status.up is False:
        return again, Observation.inconclusive(
            f"{what}: refused while {component} is not shown up: restarting? "
            f"({again.target} refused twice; {status.detail})", network_refusal=False,
            **evidence)
    return again, Observation.inconclusive(
        f"{what}: connection refused twice ({again.target}); cannot corroborate: "
        f"{status.detail}", network_refusal=None, **evidence)


def closed_port(exchange: Exchange, what: str, port_name: str,
                check: PortConfigCheck) -> Observation | None:
    """For a port-closed control: BLOCKED (connection_refused) when the refusal is backed by
    the component's configuration; INCONCLUSIVE otherwise. None when not refused."""
    if exchange.error != "refused":
        return None
    config = check()
    evidence = {"configuration": config.detail, **config.evidence}
    if config.closed:
        return Observation.blocked(
            Authority.CONNECTION_REFUSED,
            f"{what}: connection refused ({exchange.target}) and the kubelet's configuration "
            f"says {port_name} is off here ({config.detail})", network_refusal=False, **evidence)
    if config.closed is False:
        return Observation.inconclusive(
            f"network refusal: the kubelet serves {port_name} ({config.detail}) but this "
            f"vantage is refused ({exchange.target}): a firewall rule, not the kubelet's "
            "configuration, kept this probe out", network_refusal=True, **evidence)
    return Observation.inconclusive(
        f"{what}: connection refused ({exchange.target}); cannot corroborate: {config.detail}",
        network_refusal=None, **evidence)


# ---------------------------------------------------------------- checks through the API

NO_API = "no API to ask"


def kubelet_up(kube, node: str) -> ComponentCheck:
    """The API server reaches the kubelet's port through nodes/proxy (/healthz answers)."""
    def check() -> ComponentStatus:
        if kube is None:
            return ComponentStatus(None, f"{NO_API} whether the kubelet of {node} is up")
        from kubernetes.client.rest import ApiException
        try:
            response = kube.core.connect_get_node_proxy_with_path(
                node, "healthz", _preload_content=False, _request_timeout=kube.timeout)
        except ApiException as exc:
            return _proxy_failure(exc, f"the kubelet of node {node}")
        except Exception as exc:  # noqa: BLE001 - the API itself did not answer
            return ComponentStatus(None, f"the API server did not answer ({type(exc).__name__})")
        body = response.data.decode(errors="replace")[:80]
        return ComponentStatus(True, f"the API server reached the kubelet of node {node} "
                                     f"through nodes/proxy: /healthz {response.status} {body!r}")
    return check


def _proxy_failure(exc, whom: str) -> ComponentStatus:
    message = (exc.body.decode(errors="replace") if isinstance(exc.body, bytes)
               else str(exc.body or exc.reason))[:200]
    if exc.status in (401, 403, 404):
        return ComponentStatus(None, f"the API refused the check of {whom}: HTTP {exc.status} "
                                     f"{message}")
    if "dial tcp" in message or "error trying to reach" in message or exc.status in (502, 503):
        return ComponentStatus(False, f"the API server could not reach {whom}: HTTP "
                                      f"{exc.status} {message}")
    # The kubelet itself answered with an error: it is up and serving on its port.
    return ComponentStatus(True, f"{whom} answered through nodes/proxy with HTTP {exc.status}")


def etcd_up(kube, member: str, host: str) -> ComponentCheck:
    """The etcd static pod of this member (kube-system, component=etcd) is Running and Ready;
    the API server's /readyz/etcd goes into the evidence."""
    def check() -> ComponentStatus:
        if kube is None:
            return ComponentStatus(None, f"{NO_API} whether etcd member {member} is up")
        from kubeprobe.discovery import parse_flags
        try:
            pods = kube.core.list_namespaced_pod("kube-system", label_selector="component=etcd",
                                                 _request_timeout=kube.timeout).items
        except Exception as exc:  # noqa: BLE001
            return ComponentStatus(None, f"cannot list the etcd pods ({type(exc).__name__})")
        readyz = _readyz_etcd(kube)
        for pod in pods:
            container = pod.spec.containers[0]
            flags = parse_flags((container.command or []) + (container.args or []))
            addresses = {pod.status.pod_ip, pod.status.host_ip} if pod.status else set()
            if flags.get("--name", pod.metadata.name) != member and host not in addresses:
                continue
            conditions = {c.type: c.status for c in (pod.status.conditions or [])}
            restarts = sum(c.restart_count for c in pod.status.container_statuses or [])
            state = (f"kube-system/{pod.metadata.name} is {pod.status.phase}, "
                     f"Ready={conditions.get('Ready')}, {restarts} restarts")
            up = pod.status.phase == "Running" and conditions.get("Ready") == "True"
            return ComponentStatus(up, state, {"apiserver_readyz_etcd": readyz})
        return ComponentStatus(None, f"no etcd pod in kube-system for member {member} "
                                     f"({host}); API server /readyz/etcd: {readyz}",
                               {"apiserver_readyz_etcd": readyz})
    return check


def _readyz_etcd(kube) -> str:
    try:
        response = kube.api_client.call_api(
            "/readyz/etcd", "GET", auth_settings=["BearerToken"], _preload_content=False,
            _request_timeout=kube.timeout)
        data = response[0] if isinstance(response, tuple) else response
        return f"HTTP {data.status} {data.data.decode(errors='replace')[:80]!r}"
    except Exception as exc:  # noqa: BLE001 - evidence only
        return f"unavailable ({type(exc).__name__}: {str(exc)[:100]})"


def _kubelet_configz(kube, node: str) -> tuple[dict | None, str]:
    if kube is None:
        return None, f"{NO_API} for the kubelet's configuration of node {node}"
    try:
        return kube.kubelet_configz(node), ""
    except (ValueError, json.JSONDecodeError) as exc:
        return None, f"node {node} /configz is not JSON ({exc})"
    except Exception as exc:  # noqa: BLE001
        status = getattr(exc, "status", None)
        return None, (f"node {node} /configz through nodes/proxy failed: "
                      f"{f'HTTP {status}' if status else type(exc).__name__}")


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def read_only_port_config(kube, node: str, probed_port: int) -> PortConfigCheck:
    """readOnlyPort from the kubelet's /configz (omitted when 0, i.e. disabled)."""
    def check() -> PortConfig:
        config, why = _kubelet_configz(kube, node)
        if config is None:
            return PortConfig(None, why)
        port = int(config.get("readOnlyPort") or 0)
        evidence = {f"node {node} /configz": {"readOnlyPort": port}}
        if port == 0:
            return PortConfig(True, "readOnlyPort: 0 (disabled)", evidence)
        if port == probed_port:
            return PortConfig(False, f"readOnlyPort: {port}", evidence)
        return PortConfig(None, f"readOnlyPort: {port}, not the probed port {probed_port}",
                          evidence)
    return check


def healthz_config(kube, node: str, probed_port: int, host: str) -> PortConfigCheck:
    """healthzPort / healthzBindAddress from the kubelet's /configz."""
    def check() -> PortConfig:
        config, why = _kubelet_configz(kube, node)
        if config is None:
            return PortConfig(None, why)
        port = int(config.get("healthzPort", 10248) or 0)
        bind = str(config.get("healthzBindAddress", "127.0.0.1"))
        evidence = {f"node {node} /configz": {"healthzPort": port, "healthzBindAddress": bind}}
        shown = f"healthzBindAddress: {bind}, healthzPort: {port}"
        if port == 0:
            return PortConfig(True, f"{shown} (disabled)", evidence)
        if _is_loopback(bind):
            return PortConfig(True, f"{shown} (loopback only)", evidence)
        if port != probed_port:
            return PortConfig(None, f"{shown}, not the probed port {probed_port}", evidence)
        if bind in ("0.0.0.0", "::", "", host):
            return PortConfig(False, shown, evidence)
        return PortConfig(None, f"{shown}: bound to another address than the probed {host}",
                          evidence)
    return check
