"""Configuration evidence next to each verdict: what the component says about itself.

The attack decides the verdict; the configuration is a cross-check for the auditor. Two
sources, both optional:
  - the API (always, with the runner's credentials): kubelet /configz through nodes/proxy,
    etcd and kube-apiserver flags from their static pods;
  - the node's files through pytest-testinfra (docker://<node> on kind, local:// on the lab,
    ssh:// for staging when given): the kubelet config file and the static pod manifests.
"""
from __future__ import annotations

from typing import Any

import yaml

from kubeprobe.discovery import Endpoints, parse_flags, pod_flags
from kubeprobe.kube import Kube

KUBELET_KEYS = ("authentication", "authorization", "readOnlyPort", "healthzBindAddress",
                "port")
ETCD_FLAG_WORDS = ("cert", "key", "trusted-ca", "client-cert-auth", "auto-tls", "urls")
APISERVER_FLAG_WORDS = ("anonymous-auth", "authorization-mode", "admission", "audit",
                        "kubelet-client", "kubelet-certificate", "etcd-")
NODE_FILES = {"kubelet": "/var/lib/kubelet/config.yaml",
              "etcd": "/etc/kubernetes/manifests/etcd.yaml",
              "kube-apiserver": "/etc/kubernetes/manifests/kube-apiserver.yaml"}


def _pick_flags(flags: dict[str, str], words: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in sorted(flags.items()) if any(w in k for w in words)}


def api_config(kube: Kube, component: str, endpoints: Endpoints,
               node: str | None = None) -> dict[str, Any]:
    """The component's security-relevant configuration as the API shows it."""
    try:
        if component == "kubelet" and node:
            config = kube.kubelet_configz(node)
            return {f"node {node} /configz": {k: config.get(k) for k in KUBELET_KEYS}}
        if component == "etcd":
            return {f"kube-system/{pod} flags": _pick_flags(flags, ETCD_FLAG_WORDS)
                    for pod, flags in endpoints.etcd_flags.items()}
        if component == "kube-apiserver":
            return {f"kube-system/{pod} flags": _pick_flags(flags, APISERVER_FLAG_WORDS)
                    for pod, flags in pod_flags(kube, "kube-apiserver").items()}
    except Exception as exc:  # noqa: BLE001 - evidence is best effort, and says why it is missing
        return {"unavailable": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {}


def node_file(host_uri: str, component: str) -> dict[str, Any]:
    """The component's config file on the node, read with testinfra."""
    path = NODE_FILES.get(component)
    if not path:
        return {}
    try:
        import testinfra
        content = testinfra.get_host(host_uri).file(path).content_string
    except Exception as exc:  # noqa: BLE001
        return {"unavailable": f"{host_uri}{path}: {type(exc).__name__}: {str(exc)[:200]}"}
    if component == "kubelet":
        config = yaml.safe_load(content) or {}
        return {f"{host_uri} {path}": {k: config.get(k) for k in KUBELET_KEYS}}
    manifest = yaml.safe_load(content) or {}
    container = manifest["spec"]["containers"][0]
    flags = parse_flags(container.get("command", []) + container.get("args", []))
    words = ETCD_FLAG_WORDS if component == "etcd" else APISERVER_FLAG_WORDS
    return {f"{host_uri} {path}": _pick_flags(flags, words)}


CGROUP_METRIC = "kubelet_cgroup_version"  # a kubelet gauge (pkg/kubelet/metrics, 1.3x): 1 or 2


def cgroup_version_from_metrics(text: str) -> str | None:
    """'1' or '2' from the kubelet's Prometheus text, or None when the gauge is absent."""
    for line in text.splitlines():
        if line.startswith(CGROUP_METRIC + " ") or line.startswith(CGROUP_METRIC + "{"):
            value = line.rsplit(None, 1)[-1]
            try:
                return str(int(float(value)))
            except ValueError:
                return None
    return None


def node_cgroups(kube: Kube, nodes: list[str] | None, workers: int = 8) -> str:
    """One line for the report: which cgroup version each node's kubelet runs on, and, on
    cgroup v1 (deprecated; kubelets >= 1.35 refuse it by default, KEP-5573), whether it runs
    there by explicit permission (/configz failCgroupV1: false). Identical nodes are grouped."""
    from concurrent.futures import ThreadPoolExecutor

    def one(node: str) -> str:
        try:
            version = cgroup_version_from_metrics(kube.kubelet_metrics(node))
        except Exception as exc:  # noqa: BLE001 - the report says why it is unknown
            return f"unknown ({type(exc).__name__})"
        if version is None:
            return f"unknown (no {CGROUP_METRIC} in the kubelet's /metrics)"
        if version != "1":
            return f"cgroup v{version}"
        try:
            permitted = kube.kubelet_configz(node).get("failCgroupV1")
        except Exception:  # noqa: BLE001
            permitted = None
        how = {False: "allowed by the kubelet's failCgroupV1: false",
               True: "failCgroupV1: true"}.get(permitted, "failCgroupV1 not shown by /configz")
        return f"cgroup v1 (deprecated; {how})"

    if nodes is None:
        return "unknown (the nodes could not be listed)"
    if not nodes:
        return "no nodes"
    with ThreadPoolExecutor(max_workers=min(workers, len(nodes))) as pool:
        found = dict(zip(nodes, pool.map(one, nodes)))
    groups: dict[str, list[str]] = {}
    for node, what in found.items():
        groups.setdefault(what, []).append(node)
    parts = []
    for what, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        parts.append(f"{what}: {shown}")
    return "; ".join(parts)
