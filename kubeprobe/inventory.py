"""Cluster inventories attached as evidence (never verdicts): which namespaces pull from
which registries, with or without pull credentials, and where ServiceAccount tokens are
mounted into workloads. Secret names only, never values."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


def registry_of(image: str) -> str:
    """Registry host of an image reference, as the container runtime resolves it."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _containers(spec) -> list:
    return list(spec.containers or []) + list(spec.init_containers or []) + \
        list(spec.ephemeral_containers or [])


def registry_inventory(pods: list, service_accounts: list) -> dict[str, Any]:
    """{namespace: {registry: {"pods": n, "pull_secrets": [names]}}}"""
    sa_secrets = {(sa.metadata.namespace, sa.metadata.name):
                  [s.name for s in sa.image_pull_secrets or []] for sa in service_accounts}
    found: dict[str, dict[str, dict]] = defaultdict(dict)
    for pod in pods:
        ns = pod.metadata.namespace
        secrets = [s.name for s in pod.spec.image_pull_secrets or []] or \
            sa_secrets.get((ns, pod.spec.service_account_name or "default"), [])
        for container in _containers(pod.spec):
            entry = found[ns].setdefault(registry_of(container.image),
                                         {"pods": set(), "pull_secrets": set()})
            entry["pods"].add(pod.metadata.name)
            entry["pull_secrets"].update(secrets)
    return {ns: {reg: {"pods": len(e["pods"]), "pull_secrets": sorted(e["pull_secrets"]),
                       "credentials": bool(e["pull_secrets"])}
                 for reg, e in sorted(regs.items())}
            for ns, regs in sorted(found.items())}


def token_automount_inventory(pods: list, service_accounts: list) -> dict[str, Any]:
    """Workload pods that get a ServiceAccount token mounted (pod setting wins over the SA's;
    unset on both means mounted)."""
    sa_setting = {(sa.metadata.namespace, sa.metadata.name): sa.automount_service_account_token
                  for sa in service_accounts}
    mounted = []
    for pod in pods:
        ns = pod.metadata.namespace
        if ns in SYSTEM_NAMESPACES:
            continue
        setting = pod.spec.automount_service_account_token
        if setting is None:
            setting = sa_setting.get((ns, pod.spec.service_account_name or "default"))
        if setting is not False:
            mounted.append(f"{ns}/{pod.metadata.name}")
    return {"workload_pods_with_token": len(mounted), "sample": sorted(mounted)[:20]}


def collect(kube) -> tuple[list, list]:
    pods = kube.core.list_pod_for_all_namespaces(_request_timeout=kube.timeout).items
    sas = kube.core.list_service_account_for_all_namespaces(_request_timeout=kube.timeout).items
    return pods, sas
