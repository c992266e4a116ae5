"""Which alert sources a target has. A control that expects an alert is NOT-VERIFIED when its
source is absent, and FAILS when the cluster demonstrably keeps no such trail.

audit  --audit-webhook HOST:PORT (the API server's audit webhook backend pointed at the
       runner: --audit-webhook-config-file; bound to exactly that address, over TLS (the
       operator's --audit-webhook-cert/--audit-webhook-key, else a per-run CA whose
       certificate is written next to the reports), POSTs ingested only with the shared
       token: --audit-webhook-token, $KUBEPROBE_AUDIT_WEBHOOK_TOKEN, else one made for the
       run; --audit-webhook-insecure: plain HTTP, with the token if one is given (a TLS
       proxy in front), else without any); else the lab: the API
       server's --audit-log-path on this host; kind: `tail -F` of it inside the node
       container; an existing cluster: --audit-log FILE (a copy the runner can read).
       An API server with neither --audit-log-path nor --audit-webhook-config-file has no
       audit trail: the source is MissingSource and the control FAILS.
falco  --falco-receiver HOST:PORT (Falco http_output / falcosidekick pointed at the runner;
       bound to exactly that address, POSTs ingested only with the shared token:
       --falco-receiver-token, $KUBEPROBE_FALCO_TOKEN, else one made for the run, or none
       with --falco-receiver-insecure), or the JSON logs of Falco pods (label
       app.kubernetes.io/name=falco) in --falco-namespace.

A source that cannot start (the receiver's address is taken, --audit-log is not a readable
file, docker is missing, the Falco pod's log cannot be opened) is left out with the reason:
the run goes on, and the controls that expect its alerts say NOT-VERIFIED with that reason.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from kubeprobe.alerts import (AuditLogSource, AuditWebhookReceiver, FalcoHttpReceiver,
                              LineSource, MissingSource)
from kubeprobe.errors import one_line
from kubeprobe.evidence import pod_flags
from kubeprobe.kube import Kube, no_answer
from kubeprobe.targets import Target

NO_AUDIT = ("the API server keeps no audit trail: neither --audit-log-path nor "
            "--audit-webhook-config-file is set")


class SourceUnavailable(Exception):
    """This alert source cannot start; the message says why."""


def _receiver_address(address: str) -> tuple[str, int]:
    """HOST:PORT as the options validated it ([::1]:2802 for an IPv6 literal)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _audit_source(target: Target, kube: Kube, audit_log: Path | None,
                  webhook: str | None = None, token: str | None = None,
                  insecure: bool = False, tls=None):
    if webhook:
        # Said explicitly: the API server posts here, whatever its flags look like from a
        # (possibly managed) control plane.
        return AuditWebhookReceiver(*_receiver_address(webhook), token=token,
                                    insecure=insecure, tls=tls)
    if audit_log is not None:
        if not audit_log.is_file() or not os.access(audit_log, os.R_OK):
            raise SourceUnavailable(f"--audit-log {audit_log} is not a readable file")
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


def _falco_source(kube: Kube, receiver: str | None, namespace: str, token: str | None,
                  insecure: bool):
    if receiver:
        return FalcoHttpReceiver(*_receiver_address(receiver), token=token, insecure=insecure)
    try:
        pods = kube.core.list_namespaced_pod(namespace,
                                             label_selector="app.kubernetes.io/name=falco",
                                             _request_timeout=kube.timeout).items
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise SourceUnavailable(f"cannot list the Falco pods in {namespace}: "
                                f"{one_line(exc)}") from None
    if not pods:
        return None
    name = pods[0].metadata.name
    try:
        stream = kube.core.read_namespaced_pod_log(name, namespace, follow=True, tail_lines=0,
                                                   _preload_content=False)
    except ApiException as exc:
        raise SourceUnavailable(f"cannot follow the logs of {namespace}/{name}: "
                                f"{one_line(exc)}") from None
    return LineSource("falco", stream.stream())


def start_sources(target: Target, kube: Kube, audit_log: Path | None = None,
                  falco_receiver: str | None = None, falco_namespace: str = "falco",
                  falco_token: str | None = None, falco_insecure: bool = False,
                  audit_webhook: str | None = None, audit_webhook_token: str | None = None,
                  audit_webhook_insecure: bool = False, audit_webhook_tls=None,
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """Build and start every alert source the target has: ({name: started source},
    {name: why it could not start}). The API server not answering is not a detector
    problem: that exception propagates (the run ends with exit 2)."""
    builders = {"audit": lambda: _audit_source(target, kube, audit_log, audit_webhook,
                                               audit_webhook_token, audit_webhook_insecure,
                                               audit_webhook_tls),
                "falco": lambda: _falco_source(kube, falco_receiver, falco_namespace,
                                               falco_token, falco_insecure)}
    started, failed = {}, {}
    for name, build in builders.items():
        try:
            source = build()
            if source is None:
                falco_failed = getattr(target, "falco", None) or ""
                if name == "falco" and falco_failed.startswith("not installed:"):
                    # the target tried to install Falco (kind + helm) and could not: its
                    # controls say NOT-VERIFIED with that reason, not merely "no source"
                    failed[name] = f"Falco {falco_failed}"
                continue
            source.start()
        except SourceUnavailable as exc:
            failed[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one line; the run goes on without it
            if no_answer(exc) and not kube.alive():
                raise
            where = (f"--falco-receiver {falco_receiver}: " if name == "falco" and falco_receiver
                     else f"--audit-webhook {audit_webhook}: " if name == "audit" and audit_webhook
                     else "")
            failed[name] = where + one_line(exc)
        else:
            started[name] = source
    return started, failed
