"""What an attack gets to work with: `AttackContext`.

An attack module exposes

    TARGETS = "kubelet"            # which endpoints it attacks (see kubeprobe.discovery.Endpoint)
    def run(ctx: AttackContext, target: Endpoint, **params) -> Observation

and uses only the context: `ctx.exchange(probe)` to touch the network (recorded as evidence),
`ctx.defer_undo(record)` to journal and register the cleanup of what it is about to create
BEFORE it creates it (kubeprobe.journal: `ObjectRef`, `PlantedFile`; `ctx.defer(...)` for
anything else to undo), `ctx.unique_name(...)` and `ctx.labels` so every object carries the
run id, and `ctx.credentials` for identities (a foreign CA, a cluster-CA-signed client
certificate, a ServiceAccount token).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from kubeprobe.errors import one_line
from kubeprobe.net import (ClientCert, Exchange, Probe, Transport, tls13_alert_may_be_lost,
                           tls13_needed)

log = logging.getLogger("kubeprobe")

RUN_ID_LABEL = "kubeprobe.io/run-id"
CONTROL_LABEL = "kubeprobe.io/control"


class Credentials(Protocol):
    """Identities an attacker may hold. A method raises `Unavailable` with the reason when the
    target cannot provide that identity (e.g. no right to approve a CSR)."""

    def foreign_ca_client_cert(self) -> ClientCert: ...
    def cluster_ca_client_cert(self, ctx: "AttackContext") -> ClientCert: ...
    # The cluster's own CA certificates (PEM) and where they were read from.
    def cluster_trust_bundle(self, ctx: "AttackContext") -> tuple[bytes, str]: ...
    def service_account_token(self, ctx: "AttackContext") -> str: ...


class Unavailable(Exception):
    """A precondition of the attack cannot be met on this target: the control is SKIPPED
    with this reason (never passed)."""


EVIDENCE_BODY_LIMIT = 2048
REDACTED = "<redacted>"
# Keys whose values are secret material wherever they occur: Secret and ConfigMap contents,
# tokens, kubeconfig keys, passwords.
_SECRET_KEYS = ("data", "stringData", "binaryData", "token", "client-key-data", "password")
# Annotations that carry a copy of the object, contents included: `kubectl apply` stores the
# applied manifest (a Secret's data or stringData in clear) in last-applied-configuration.
_SECRET_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def redact(value: Any) -> Any:
    """Evidence never carries secret material: Secret and ConfigMap contents, tokens, keys,
    object copies in annotations (last-applied-configuration), and the values of literal
    environment variables in pod specs (names are kept: a credential is often one)."""
    if isinstance(value, dict):
        return {k: (REDACTED if v and (k in _SECRET_KEYS or k in _SECRET_ANNOTATIONS)
                    else _redact_env(v) if k == "env" else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _redact_env(env: Any) -> Any:
    if not isinstance(env, list):
        return redact(env)
    return [{k: (REDACTED if k == "value" and v else redact(v)) for k, v in item.items()}
            if isinstance(item, dict) else redact(item) for item in env]


def evidence_of(exchange: Exchange) -> dict:
    """The exchange as evidence: JSON bodies redacted (a truncated one too: its whole members
    are kept, redacted, the rest dropped), every body cut to a readable size."""
    record = exchange.to_json()
    body = exchange.json_prefix()
    if body is not None:
        record["body"] = json.dumps(redact(body))
        if exchange.body_truncated:
            record["body"] += " (truncated body: only the members that arrived whole)"
    elif exchange.body_truncated and "json" in exchange.http_headers.get("content-type", ""):
        # Unparsable and cut: it could hold secret values that redaction cannot find.
        record["body"] = (f"<{len(exchange.body or '')} characters of a truncated JSON body, "
                          "not recorded>")
    if record["body"] and len(record["body"]) > EVIDENCE_BODY_LIMIT:
        record["body"] = record["body"][:EVIDENCE_BODY_LIMIT] + f"... ({len(record['body'])} chars)"
    return record


@dataclass
class Cleanup:
    description: str
    func: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    error: str | None = None


def apply_undo(undo: Any, kube: Any, journal: Any = None, entry: Any = None) -> None:
    """Apply an undo record (delete the object, remove the planted file) and strike it out
    of the journal."""
    undo.apply(kube)
    if journal is not None and entry is not None:
        journal.undone(entry)


@dataclass
class AttackContext:
    run_id: str
    control_id: str
    transport: Transport
    credentials: Credentials
    kube: Any = None                  # kubeprobe.kube.Kube (API clients) or None in self-tests
    # Returns the run's throwaway namespace, creating it on first use.
    workload_namespace: Callable[[], str] | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    # Node access through a privileged pod (kubeprobe.nodepod.NodePodAccess) where the target
    # gives none (node_host None): intrusive runs with a probe image. None: not allowed.
    node_pod: Any = None
    # How kubeprobe.plant reached the node in this attack (for the evidence).
    node_access_used: str | None = None
    # The agent image the target can run (lab/kind load it; --probe-image elsewhere), or None.
    probe_image: str | None = None
    # namespace -> the pod-spec additions for the probe image there (its imagePullSecrets,
    # the Secret made on first use), or None: the image needs no credentials.
    probe_image_pull: Callable[[str], dict] | None = None
    # Node name -> testinfra backend URI (local:// on the lab, docker://<node> on kind), or None.
    node_host: Callable[[str], str] | None = None
    # Workload namespaces (besides the run's own) where admission attacks also send their
    # dry-run pair; None: no sweep (see kubeprobe.admission.sweep).
    sweep_namespaces: Callable[[], list[str]] | None = None
    # The control expects an alert under this profile: an attack admitted by a dry run is
    # then also made for real, so that the detector has something to see.
    alert_expected: bool = False
    # A trusted, digest-pinned image the cluster's image policy must admit (the twin's).
    trusted_image: str | None = None
    # The private registry and signed/unsigned images (kubeprobe.supplychain.SupplyChain).
    supply_chain: Any = None
    # The username of the ServiceAccount whose token `credentials.service_account_token`
    # handed out (set by it): what an authorizer's refusal must name.
    service_account_username: str | None = None
    # Set when the run stops with this attack still in flight: it may create nothing more.
    stopping: Any = None              # threading.Event
    # Per-attack nonce: carried in command lines, names and URIs so that an alert or an audit
    # event can be tied to this attack (parallel-safe, no shared cache to clear).
    nonce: str = field(default_factory=lambda: secrets.token_hex(4))
    # The run's kubeprobe.journal.Journal (None in self-tests: nothing is journalled).
    journal: Any = None
    exchanges: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _cleanups: list[Cleanup] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {RUN_ID_LABEL: self.run_id, CONTROL_LABEL: self.control_id.lower()}

    def unique_name(self, prefix: str) -> str:
        """DNS-1123 name carrying the run id and a per-attack nonce."""
        return f"kp-{prefix}-{self.run_id}-{self.nonce}{secrets.token_hex(2)}".lower()[:63]

    def probe(self, host: str, port: int, **kwargs: Any) -> Probe:
        kwargs.setdefault("connect_timeout", self.connect_timeout)
        kwargs.setdefault("read_timeout", self.read_timeout)
        kwargs.setdefault("nonce", self.nonce)
        return Probe(host=host, port=port, **kwargs)

    def exchange(self, probe: Probe) -> Exchange:
        result = self._recorded_exchange(probe)
        if tls13_needed(probe, result):
            # Probes cap at TLS 1.2 (a refused client certificate then fails inside the
            # handshake); a TLS-1.3-only server must still get a verdict.
            self.note(f"{probe.url()} refused TLS 1.2 ({result.summary()}): repeated with "
                      "TLS 1.3")
            probe = dataclasses.replace(probe, max_tls_version="1.3")
            result = self._recorded_exchange(probe)
        if tls13_alert_may_be_lost(probe, result):
            self.note(f"{probe.url()}: closed without a readable alert right after a TLS 1.3 "
                      "handshake that asked for a client certificate (the close can overtake "
                      "the alert): repeated once")
            result = self._recorded_exchange(probe)
        return result

    def _recorded_exchange(self, probe: Probe) -> Exchange:
        result = self.transport.exchange(probe)
        self.exchanges.append({"request": probe.describe(), "response": evidence_of(result)})
        log.debug("%s %s -> %s", self.control_id, probe.url(), result.summary())
        return result

    def defer(self, description: str, func: Callable[..., Any], *args: Any,
              **kwargs: Any) -> None:
        """Register cleanup before creating the thing it removes. Runs LIFO, always."""
        self._cleanups.append(Cleanup(description, func, args, kwargs))

    def defer_undo(self, undo: Any) -> None:
        """Before creating something: journal its undo record (kubeprobe.journal.ObjectRef or
        PlantedFile; raises if it cannot be written, and then nothing may be created) and
        register the cleanup that applies it. The one way a creation path registers."""
        from kubeprobe.interrupts import Interrupted, shielded
        if self.stopping is not None and self.stopping.is_set():
            # The run is stopping (a signal, its deadline) and has undone what was journalled:
            # nothing new may be created behind its back.
            guard = getattr(self.journal, "guard", None)
            raise Interrupted(getattr(guard, "received", None) or "the run's deadline")
        # One step for SIGINT/SIGTERM: a record is never written without its cleanup.
        with shielded(getattr(self.journal, "guard", None)):
            entry = self.journal.intend(undo, self.control_id) if self.journal else None
            self.defer(undo.describe(), apply_undo, undo, self.kube, self.journal, entry)

    def namespace(self) -> str:
        if self.workload_namespace is None:
            raise Unavailable("no Kubernetes API to create a workload namespace in")
        return self.workload_namespace()

    def note(self, text: str) -> None:
        self.notes.append(text)

    def probe_image_spec(self, namespace: str) -> dict:
        """Add these to the spec of a pod that runs the probe image in `namespace` (the
        run's pull Secret, said in the evidence by name, never its content)."""
        if self.probe_image_pull is None:
            return {}
        spec = self.probe_image_pull(namespace)
        for secret in spec.get("imagePullSecrets", []):
            self.note(f"the probe image is pulled with the pull secret {namespace}/"
                      f"{secret['name']} (--probe-image-pull-secret)")
        return spec

    def run_cleanups(self, on_error: Callable[[Cleanup], Any] | None = None) -> list[Cleanup]:
        """Run every registered cleanup (last first), even if one fails; return them all with
        their errors (one line each) so the report can show a cleanup that did not work.
        `on_error` sees each failure before the next cleanup runs (the suite checks there
        whether the API server is gone, which shortens the deadlines of the rest)."""
        done = []
        while self._cleanups:
            item = self._cleanups.pop()
            started = time.monotonic()
            try:
                item.func(*item.args, **item.kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, none hidden
                item.error = one_line(exc, 300)
                log.warning("cleanup failed: %s: %s", item.description, item.error)
                if on_error is not None:
                    on_error(item)
            log.debug("cleanup %s took %.2fs", item.description, time.monotonic() - started)
            done.append(item)
        return done
