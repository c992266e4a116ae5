"""Run one control against the target: attack every endpoint, judge, collect the evidence."""
from __future__ import annotations

import secrets
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Callable

from kubernetes.client.rest import ApiException

from kubeprobe import evidence, falco
from kubeprobe.alerts import parse_matcher
from kubeprobe.catalog import Catalog, Control, load_attack
from kubeprobe.context import AttackContext, Cleanup, Unavailable
from kubeprobe.discovery import Endpoint, Endpoints, discover
from kubeprobe.identities import ClusterCredentials
from kubeprobe.kube import Kube, RunNamespace, is_connection_failure
from kubeprobe.net import RunnerTransport, Transport
from kubeprobe.outcome import Expectation, Observation, Verdict, judge
from kubeprobe.targets import Target

CLOCK_SKEW = timedelta(seconds=2)
# Worst first: the control's verdict is the worst over its endpoints.
SEVERITY = [Verdict.FAIL, Verdict.ERROR, Verdict.NOT_VERIFIED, Verdict.SKIP, Verdict.PASS]


class SuiteAbort(Exception):
    """The suite cannot go on (the API server went away mid-run): exit 2."""


def new_run_id() -> str:
    """Short, unique, sortable-ish: month-day-hour-minute plus 24 random bits."""
    return datetime.now(timezone.utc).strftime("%m%d%H%M") + secrets.token_hex(3)


@dataclass
class EndpointResult:
    endpoint: Endpoint
    vantage: str
    observation: Observation
    verdict: Verdict
    reason: str
    exchanges: list[dict]
    notes: list[str]
    cleanups: list[Cleanup]
    alert: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": {"kind": self.endpoint.kind, "name": self.endpoint.name,
                             "address": self.endpoint.address, "source": self.endpoint.source},
                "vantage": self.vantage, "verdict": self.verdict.value, "reason": self.reason,
                "observation": self.observation.to_json(), "exchanges": self.exchanges,
                "notes": self.notes, "alert": self.alert,
                "cleanup": [{"step": c.description, "error": c.error} for c in self.cleanups]}


@dataclass
class ControlResult:
    control: Control
    profile: str
    expected: Expectation
    verdict: Verdict
    reason: str
    started_at: str
    duration_s: float
    endpoints: list[EndpointResult] = field(default_factory=list)
    configuration: dict[str, Any] = field(default_factory=dict)

    @property
    def observed(self) -> str:
        if not self.endpoints:
            return "-"
        return "; ".join(sorted({e.observation.observed for e in self.endpoints}))

    def to_json(self) -> dict[str, Any]:
        c = self.control
        return {"id": c.id, "title": c.title, "component": c.component, "guidance": c.guidance,
                "attack": c.attack, "params": c.params, "identity": c.identity,
                "vantage": c.vantage, "profile": self.profile, "expected": self.expected.value,
                "accepted_authorities": sorted(a.value for a in c.blocked_by),
                "observed": self.observed, "verdict": self.verdict.value, "reason": self.reason,
                "mappings": c.mappings, "remediation": c.remediation,
                "started_at": self.started_at, "duration_s": round(self.duration_s, 3),
                "endpoints": [e.to_json() for e in self.endpoints],
                "configuration": self.configuration}


def worst(verdicts: list[Verdict]) -> Verdict:
    return min(verdicts, key=SEVERITY.index)


@dataclass
class Suite:
    """One session against one target. Holds no global state: pytest owns the instance."""
    catalog: Catalog
    target: Target
    kube: Kube
    profile: str = "default"
    run_id: str = field(default_factory=new_run_id)
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    intrusive: bool = False
    pod_transport_factory: Callable[["Suite"], Transport] | None = None
    probe_image: str | None = None
    falco_namespace: str = "falco"
    alert_sources: dict[str, Any] = field(default_factory=dict)  # name -> alerts.AlertSource
    alert_deadline_s: float = 15.0
    results: list[ControlResult] = field(default_factory=list)
    _cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def defer(self, description: str, func: Callable[..., None], *args: Any) -> None:
        self._cleanups.append((description, lambda: func(*args)))

    def close(self) -> list[str]:
        errors = []
        while self._cleanups:
            description, step = self._cleanups.pop()
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported
                errors.append(f"{description}: {type(exc).__name__}: {exc}")
        return errors

    @cached_property
    def endpoints(self) -> Endpoints:
        return discover(self.kube)

    @cached_property
    def namespace(self) -> RunNamespace:
        return RunNamespace(self.kube, self.run_id, self.defer)

    @cached_property
    def credentials(self) -> ClusterCredentials:
        return ClusterCredentials(self.kube)

    @cached_property
    def runner_transport(self) -> Transport:
        return RunnerTransport()

    @cached_property
    def pod_transport(self) -> Transport:
        if self.pod_transport_factory is None:
            raise Unavailable("the pod vantage is not available in this build")
        return self.pod_transport_factory(self)

    @cached_property
    def environment(self) -> dict[str, str]:
        """Read once, at the start: the cluster may be gone when the reports are written."""
        version = self.kube.server_version()
        return {"Run id": self.run_id, "Target": self.target.description,
                "Kubernetes": version["gitVersion"], "API server": self.kube.server_url,
                "Context": self.kube.context or "current", "Profile": self.profile,
                "Alert sources": ", ".join(f"{n} ({type(s).__name__})"
                                           for n, s in sorted(self.alert_sources.items()))
                or "none",
                "Falco": "; ".join(filter(None, [self.target.falco,
                                                 falco.describe(self.kube, self.falco_namespace)])),
                "Falco rules (sha256)": ", ".join(f"{name} {digest[:16]}" for name, digest
                                                  in falco.rules_hashes().items()),
                "Catalog": str(self.catalog.path)}

    def run_control(self, control: Control) -> ControlResult:
        started, clock = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.monotonic()
        expected = control.expectation(self.profile)

        def finish(verdict: Verdict, reason: str, endpoints=(), configuration=None):
            result = ControlResult(control, self.profile, expected, verdict, reason, started,
                                   time.monotonic() - clock, list(endpoints),
                                   configuration or {})
            self.results.append(result)
            return result

        if control.intrusive and not self.intrusive and self.target.kind == "existing":
            return finish(Verdict.SKIP, "intrusive attack: run with --intrusive on an "
                                        "existing cluster")
        attack = load_attack(control.attack, self.catalog.attacks_dir)
        endpoints = self.endpoints.of(attack.TARGETS)
        if not endpoints:
            why = self.endpoints.missing.get(attack.TARGETS, f"no {attack.TARGETS} endpoint found")
            return finish(Verdict.SKIP, why)
        try:
            transport = (self.pod_transport if control.vantage == "pod"
                         else self.runner_transport)
        except Unavailable as exc:
            return finish(Verdict.SKIP, f"vantage {control.vantage}: {exc}")

        done = [self._attack_endpoint(control, attack, endpoint, transport, expected)
                for endpoint in endpoints]
        configuration = self._configuration(control, endpoints)
        skipped = [d for d in done if d.verdict is Verdict.SKIP]
        if skipped and len(skipped) == len(done):
            return finish(Verdict.SKIP, skipped[0].reason, done, configuration)
        verdict = worst([d.verdict for d in done])
        reasons = "; ".join(f"{d.endpoint.name} ({d.endpoint.host}): {d.reason}"
                            for d in done if d.verdict is verdict)
        return finish(verdict, reasons, done, configuration)

    def _attack_endpoint(self, control: Control, attack, endpoint: Endpoint,
                         transport: Transport, expected: Expectation) -> EndpointResult:
        ctx = AttackContext(run_id=self.run_id, control_id=control.id, transport=transport,
                            credentials=self.credentials, kube=self.kube,
                            workload_namespace=self.namespace.ensure,
                            connect_timeout=self.connect_timeout,
                            read_timeout=self.read_timeout, probe_image=self.probe_image,
                            node_host=self.target.node_host)
        skip_reason = None
        since = datetime.now(timezone.utc)
        try:
            observation = attack.run(ctx, endpoint, **control.params)
        except Unavailable as exc:
            skip_reason = str(exc)
            observation = Observation.inconclusive(f"not attempted: {exc}")
        except Exception as exc:  # noqa: BLE001 - an attack that breaks is an ERROR, never a pass
            if (is_connection_failure(exc) or (isinstance(exc, ApiException)
                                               and exc.status == 0)) and not self.kube.alive():
                ctx.run_cleanups()
                raise SuiteAbort(f"API server {self.kube.server_url} stopped answering "
                                 f"mid-run (during {control.id})") from None
            observation = Observation.inconclusive(
                f"the attack raised {type(exc).__name__}: {str(exc)[:300]}",
                traceback=traceback.format_exc(limit=6))
        cleanups = ctx.run_cleanups()
        alert_evidence = None
        if skip_reason is not None:
            verdict, reason = Verdict.SKIP, skip_reason
        else:
            judgement = judge(expected, control.blocked_by, observation, control.weaker)
            if judgement.verdict is Verdict.NOT_VERIFIED:
                configured, alerted, alert_evidence = self._wait_for_alert(control, ctx, since)
                judgement = judge(expected, control.blocked_by, observation, control.weaker,
                                  configured, alerted)
                if alert_evidence and alert_evidence.get("reason") and not alerted:
                    judgement = type(judgement)(judgement.verdict, judgement.reason + " ("
                                                + alert_evidence["reason"] + ")")
            verdict, reason = judgement.verdict, judgement.reason
        failed = [c for c in cleanups if c.error]
        if failed and verdict is not Verdict.FAIL:
            verdict = Verdict.ERROR
            reason += "; cleanup failed: " + "; ".join(f"{c.description}: {c.error}"
                                                       for c in failed)
        return EndpointResult(endpoint, transport.vantage, observation, verdict, reason,
                              ctx.exchanges, ctx.notes, cleanups, alert_evidence)

    def _wait_for_alert(self, control: Control, ctx: AttackContext,
                        since: datetime) -> tuple[bool, bool | None, dict | None]:
        """(source configured, alerted, evidence) for a control that expects an alert."""
        matcher = parse_matcher(control.alert, nonce=ctx.nonce)
        source = self.alert_sources.get(matcher.source)
        if source is None:
            return False, None, None
        # The nonce ties the alert to this attack; the window only has to absorb clock skew.
        result = source.wait_for(matcher, since - CLOCK_SKEW, self.alert_deadline_s)
        evidence = {"source": source.name, "matcher": {"rule": matcher.rule,
                                                       "fields": matcher.fields,
                                                       "nonce": matcher.nonce},
                    **result.evidence()}
        return True, result.matched is not None, evidence

    def _configuration(self, control: Control, endpoints: list[Endpoint]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        nodes = [e.name for e in endpoints] if control.component == "kubelet" else [None]
        for node in nodes:
            found.update(evidence.api_config(self.kube, control.component, self.endpoints,
                                             node))
        if self.target.node_host is not None and control.component in evidence.NODE_FILES:
            for node in [e.name for e in self.endpoints.of("node")][:1]:
                found.update(evidence.node_file(self.target.node_host(node), control.component))
        return found
