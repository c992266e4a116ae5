"""Which alert sources a target has. A control that expects an alert is NOT-VERIFIED when its
source is absent, and FAILS when the cluster demonstrably keeps no such trail.

audit  the lab: the API server's --audit-log-path on this host; kind: `tail -F` of it inside
       the node container; an existing cluster: --audit-log FILE (a copy the runner can read).
       An API server with neither --audit-log-path nor --audit-webhook-config-file has no
       audit trail: the source is MissingSource and the control FAILS.
falco  --falco-receiver HOST:PORT (Falco http_output / falcosidekick pointed at the runner), or
       the JSON logs of Falco pods (label app.kubernetes.io/name=falco) in --falco-namespace.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from kubeprobe.alerts import (AuditLogSource, FalcoHttpReceiver, LineSource, MissingSource)
from kubeprobe.evidence import pod_flags
from kubeprobe.kube import Kube
from kubeprobe.targets import Target

NO_AUDIT = ("the API server keeps no audit trail: neither --audit-log-path nor "
            "--audit-webhook-config-file is set")


def _audit_source(target: Target, kube: Kube, audit_log: Path | None):
    if audit_log is not None:
        return AuditLogSource(audit_log)
    apiservers = pod_flags(kube, "kube-apiserver")
    if not apiservers:
        return None  # managed control plane: we cannot tell, so nothing is claimed
    flags = next(iter(apiservers.values()))
    path = flags.get("--audit-log-path")
    if not path and not flags.get("--audit-webhook-config-file"):
        return MissingSource("audit", NO_AUDIT)
    if not path or path == "-":
        return None
    if target.kind == "lab":
        return AuditLogSource(Path(path))
    if target.kind == "kind":
        node = kube.core.list_node(label_selector="node-role.kubernetes.io/control-plane",
                                   _request_timeout=kube.timeout).items[0].metadata.name
        tail = subprocess.Popen(["docker", "exec", node, "tail", "-n0", "-F", path],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return LineSource("audit", iter(tail.stdout.readline, b""), on_stop=tail.terminate)
    return None


def _falco_source(kube: Kube, receiver: str | None, namespace: str):
    if receiver:
        host, _, port = receiver.rpartition(":")
        return FalcoHttpReceiver(host or "0.0.0.0", int(port))
    try:
        pods = kube.core.list_namespaced_pod(namespace,
                                             label_selector="app.kubernetes.io/name=falco",
                                             _request_timeout=kube.timeout).items
    except ApiException:
        return None
    if not pods:
        return None
    stream = kube.core.read_namespaced_pod_log(pods[0].metadata.name, namespace, follow=True,
                                               tail_lines=0, _preload_content=False)
    return LineSource("falco", stream.stream())


def sources_for(target: Target, kube: Kube, audit_log: Path | None = None,
                falco_receiver: str | None = None,
                falco_namespace: str = "falco") -> dict[str, Any]:
    found = {"audit": _audit_source(target, kube, audit_log),
             "falco": _falco_source(kube, falco_receiver, falco_namespace)}
    return {name: source for name, source in found.items() if source is not None}
