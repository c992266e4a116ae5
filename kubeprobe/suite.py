"""Run one control against the target: attack every endpoint, judge, collect the evidence."""
from __future__ import annotations

import fnmatch
import queue
import secrets
import threading
import time
import traceback
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Callable

from kubeprobe import evidence, falco
from kubeprobe.alerts import parse_matcher
from kubeprobe.catalog import Catalog, Control, load_attack
from kubeprobe.context import RUN_ID_LABEL, AttackContext, Cleanup, Unavailable, apply_undo
from kubeprobe.discovery import Endpoint, Endpoints, discover
from kubeprobe.identities import ClusterCredentials
from kubeprobe.errors import one_line
from kubeprobe.interrupts import InterruptGuard, shielded
from kubeprobe.kube import Kube, RunNamespace
from kubeprobe.net import RunnerTransport, Transport
from kubeprobe.outcome import Expectation, Observation, Verdict, judge
from kubeprobe.provenance import sha256_of
from kubeprobe.targets import Target

CLOCK_SKEW = timedelta(seconds=2)
# Never swept by admission attacks: the control plane's own namespaces.
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# Worst first: the control's verdict is the worst over its endpoints.
SEVERITY = [Verdict.FAIL, Verdict.ERROR, Verdict.NOT_VERIFIED, Verdict.SKIP, Verdict.PASS]


class DaemonPool:
    """A bounded pool of daemon threads. An interrupted or over-deadline run exits without
    waiting for an attack still in flight: what it created is undone from the journal
    (`Suite.stop`), so no worker has to be waited for (concurrent.futures' threads are
    joined at interpreter exit)."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Queued jobs are cancelled; running ones go on (daemon threads)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)


class SuiteAbort(Exception):
    """The suite cannot go on (the API server went away mid-run): exit 2. The message is the
    one line shown; the remaining cleanups were attempted, with short deadlines, before it was
    raised."""


class _ApiGone(Exception):
    """Raised inside run_control once the API server is known to be gone: (step, cleanups of
    the endpoint being attacked, already attempted)."""

    def __init__(self, step: str, cleanups: list[Cleanup] = ()) -> None:
        super().__init__(step)
        self.step, self.cleanups = step, list(cleanups)


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

    @property
    def failed_cleanups(self) -> list[Cleanup]:
        return [c for c in self.cleanups if c.error]

    @property
    def cleanup_note(self) -> str:
        """'cleanup failed: <step>: <error>; ...', or '' when every cleanup worked."""
        failed = self.failed_cleanups
        return ("cleanup failed: " + "; ".join(f"{c.description}: {c.error}" for c in failed)
                if failed else "")

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
    # --probe-image-pull-secret (kubeprobe.workloads.ProbeImagePullSecret), or None.
    probe_image_pull_secret: Any = None
    # How planting attacks reach a node: auto (the target's own access, else a privileged
    # pod on intrusive runs with a probe image), direct (the target's only), pod (always
    # the privileged pod), in this namespace.
    node_access: str = "auto"
    node_access_namespace: str = "kube-system"
    falco_namespace: str = "falco"
    alert_sources: dict[str, Any] = field(default_factory=dict)  # name -> alerts.AlertSource
    alert_deadline_s: float = 15.0
    # name -> why that alert source could not start (its controls say NOT-VERIFIED, and why)
    alert_sources_unavailable: dict[str, str] = field(default_factory=dict)
    # Workload namespaces admission attacks also try (globs; empty: only the run's own).
    namespace_patterns: tuple[str, ...] = ("*",)
    trusted_image: str | None = None
    # The private registry and signed/unsigned images (kubeprobe.supplychain), or None.
    supply_chain: Any = None
    # Controls attacked at once, and 4x as many endpoints of one control (1: one after
    # another).
    parallelism: int = 8
    # Seconds the whole run may take once started; a control still running then is an ERROR.
    run_deadline_s: float = 1800.0
    results: list[ControlResult] = field(default_factory=list)
    # (control id, step, error) for every per-control cleanup that failed: exit 2 at the end
    failed_cleanups: list[tuple[str, str, str]] = field(default_factory=list)
    # The run's kubeprobe.journal.Journal (None: nothing is journalled, e.g. self-tests).
    journal: Any = None
    # SIGINT/SIGTERM: cleanups are shielded from them, the interrupt is raised after.
    interrupts: InterruptGuard | None = None
    current_control: str | None = None      # for the line of an interrupted run
    _cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    _scheduled: dict[str, Future] = field(default_factory=dict)
    _pool: DaemonPool | None = None
    _deadline: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _timed_out: set[str] = field(default_factory=set)
    _pod_lock: threading.Lock = field(default_factory=threading.Lock)
    _pod_transport_error: Unavailable | None = None
    # node name -> the vantage pod placed there (multi-node clusters), or why it could not start
    _node_transports: dict[str, Any] = field(default_factory=dict)

    def defer(self, description: str, func: Callable[..., None], *args: Any) -> None:
        self._cleanups.append((description, lambda: func(*args)))

    def defer_undo(self, undo: Any) -> None:
        """A run-wide creation (the run's namespace, the vantage pod): journal its undo
        record, then register the cleanup that applies it (see AttackContext.defer_undo)."""
        with shielded(self.interrupts):
            entry = self.journal.intend(undo, "run") if self.journal is not None else None
            self.defer(undo.describe(), apply_undo, undo, self.kube, self.journal, entry)

    @property
    def cleanup_failures(self) -> list[str]:
        """'<control>: <step>: <error>' for every per-control cleanup that failed."""
        return [f"{control}: {step}: {error}" for control, step, error in self.failed_cleanups]

    def close(self) -> list[str]:
        """Run the run-wide cleanups (last first, every one even if one fails); return
        '<step>: <error>' for each that failed."""
        errors = []
        with shielded(self.interrupts):
            while self._cleanups:
                description, step = self._cleanups.pop()
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - reported
                    errors.append(f"{description}: {one_line(exc, 300)}")
                    self._note_failure()
        return errors

    def _note_failure(self, *_: Any) -> None:
        """After a failed call: if the API server no longer answers, say so once; every later
        call (the rest of the cleanups) then gets short deadlines."""
        if not self.kube.gone and not self.kube.alive():
            self.kube.mark_gone()

    def _abort(self, control: Control, step: str, cleanups: list[Cleanup]) -> SuiteAbort:
        """The API server is gone: attempt every remaining cleanup (short deadlines) and
        build the one line the run ends with."""
        self.kube.mark_gone()
        left = [f"{earlier}: {what}" for earlier, what, _ in self.failed_cleanups]
        left += [c.description for c in cleanups if c.error]
        left += [error.split(": ", 1)[0] for error in self.close()]
        message = (f"API server {self.kube.server_url} stopped answering mid-run "
                   f"(during {control.id}) while {step}")
        if left:
            shown = "; ".join(left[:4]) + (f"; and {len(left) - 4} more" if len(left) > 4
                                            else "")
            message += f"; cleanup not done, objects may be left in the cluster: {shown}"
        if self.kube.silence:
            message += f" (its last /version: {self.kube.silence})"
        if self.journal is not None and self.journal.pending:
            from kubeprobe.sweep import sweep_command
            message += ("; once it answers again, remove what is left with: "
                        + sweep_command(self.run_id, self.journal.path.parent.parent))
        return SuiteAbort(message)

    @cached_property
    def endpoints(self) -> Endpoints:
        from kubeprobe.supplychain import add_registry_endpoint
        return add_registry_endpoint(discover(self.kube), self.supply_chain)

    @cached_property
    def namespace(self) -> RunNamespace:
        return RunNamespace(self.kube, self.run_id, self.defer_undo)

    @cached_property
    def workload_namespaces(self) -> list[str]:
        """Existing namespaces where workloads run: not the control plane's, not the
        detector's, not a kubeprobe run's, not terminating; filtered by --namespaces."""
        found = []
        for ns in self.kube.core.list_namespace(_request_timeout=self.kube.timeout).items:
            name, labels = ns.metadata.name, ns.metadata.labels or {}
            if (name in SYSTEM_NAMESPACES or name == self.falco_namespace
                    or RUN_ID_LABEL in labels or (ns.status and ns.status.phase == "Terminating")):
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in self.namespace_patterns):
                found.append(name)
        return sorted(found)

    @cached_property
    def credentials(self) -> ClusterCredentials:
        return ClusterCredentials(self.kube)

    @cached_property
    def runner_transport(self) -> Transport:
        return RunnerTransport()

    @property
    def pod_transport(self) -> Transport:
        """The agent pod, started once for every pod-vantage control (concurrent callers
        wait for the first); a failure to start it is remembered, not retried per control."""
        with self._pod_lock:
            if self._pod_transport_error is not None:
                raise self._pod_transport_error
            if "_pod_transport" not in self.__dict__:
                if self.pod_transport_factory is None:
                    self._pod_transport_error = Unavailable(
                        "the pod vantage is not available in this build")
                    raise self._pod_transport_error
                try:
                    self.__dict__["_pod_transport"] = self.pod_transport_factory(self)
                except Unavailable as exc:
                    self._pod_transport_error = exc
                    raise
            return self.__dict__["_pod_transport"]

    def pod_transport_on(self, node: str) -> Transport:
        """A vantage pod placed on `node` (started once per node; a failure is remembered)."""
        with self._pod_lock:
            found = self._node_transports.get(node)
            if found is None:
                if self.pod_transport_factory is None:
                    found = Unavailable("the pod vantage is not available in this build")
                else:
                    try:
                        found = self.pod_transport_factory(self, node=node)
                    except Unavailable as exc:
                        found = exc
                self._node_transports[node] = found
        if isinstance(found, Unavailable):
            raise found
        return found

    def pod_transport_for(self, endpoint: Endpoint) -> Transport:
        """The pod vantage for one endpoint. A node's own services (its kubelet) are attacked
        from a pod on ANOTHER node when the cluster has more than one: the lateral position a
        compromised workload elsewhere in the cluster holds. Everything else, and single-node
        clusters, use the one shared vantage pod."""
        if endpoint.kind == "node":
            others = sorted({e.name for e in self.endpoints.of("node")} - {endpoint.name})
            if others:
                return self.pod_transport_on(others[0])
        return self.pod_transport

    # -- scheduling: controls run concurrently, reported in catalog order ------------------
    def start(self, controls: list[Control]) -> None:
        """Submit every control to a bounded pool: long-running ones (an ageing process)
        first, so their wait overlaps everything else. Shared lookups are made once before,
        so no two controls race to make them."""
        self._deadline = time.monotonic() + self.run_deadline_s
        for warm in (lambda: self.endpoints, lambda: self.environment,
                     lambda: self.workload_namespaces if self.namespace_patterns else None):
            try:
                warm()
            except Exception:  # noqa: BLE001 - the control that needs it meets it and says so
                pass
        self._pool = DaemonPool(self.parallelism, "kubeprobe-control")
        for control in sorted(controls, key=lambda c: not c.long_running):
            self._scheduled[control.id] = self._pool.submit(self.run_control, control)

    def result_of(self, control: Control) -> ControlResult:
        """The control's result: from the pool when scheduled (waiting at most until the
        run's deadline), else run here and now."""
        future = self._scheduled.get(control.id)
        if future is None:
            return self.run_control(control)
        remaining = max(0.0, self._deadline - time.monotonic())
        try:
            return future.result(timeout=remaining)
        except FutureTimeout:
            result = ControlResult(control, self.profile, control.expectation(self.profile),
                                   Verdict.ERROR, f"the run's deadline ({self.run_deadline_s:.0f}"
                                   " s) passed before this control finished",
                                   datetime.now(timezone.utc).isoformat(timespec="seconds"), 0.0)
            with self._lock:
                self._timed_out.add(control.id)
                self.results.append(result)
            return result

    def stop(self) -> None:
        """No new control starts. Controls still in flight (an interrupt, the run's deadline)
        are not waited for: every journal record not undone yet is undone here, and a
        control that tries to create anything more is interrupted (see
        AttackContext.defer_undo)."""
        if self._pool is None:
            return
        self._pool.shutdown()
        in_flight = [cid for cid, f in self._scheduled.items() if not f.done()]
        if not in_flight or self.journal is None:
            return
        self._stopping.set()
        for entry in reversed(self.journal.pending):
            try:
                apply_undo(entry.undo, self.kube, self.journal, entry)
            except Exception as exc:  # noqa: BLE001 - reported with the other failures
                self.failed_cleanups.append((", ".join(in_flight), entry.undo.describe(),
                                             one_line(exc, 300)))

    @property
    def ordered_results(self) -> list[ControlResult]:
        """Results in catalog order, whatever order the controls finished in."""
        order = {c.id: i for i, c in enumerate(self.catalog.controls)}
        with self._lock:
            return sorted(self.results, key=lambda r: order.get(r.control.id, len(order)))

    @cached_property
    def environment(self) -> dict[str, str]:
        """Read once, at the start: the cluster may be gone when the reports are written.
        Names the cluster (API server, version, kube-system's UID), the runner as the API
        server authenticated it, and the sha256 of the files that decide the verdicts."""
        version = self.kube.server_version()
        return {"Run id": self.run_id, "Target": self.target.description,
                "Kubernetes": version["gitVersion"], "API server": self.kube.server_url,
                "kube-system UID": self.kube.namespace_uid("kube-system"),
                "Node cgroups": evidence.node_cgroups(self.kube, self._node_names()),
                "Runner": self.kube.runner_identity(),
                "Context": self.kube.context or "current", "Profile": self.profile,
                "Alert sources": ", ".join(
                    f"{n} ({s.describe() if hasattr(s, 'describe') else type(s).__name__})"
                    for n, s in sorted(self.alert_sources.items()))
                or "none",
                "Falco": "; ".join(filter(None, [self.target.falco,
                                                 falco.describe(self.kube, self.falco_namespace)])),
                "Falco rules (sha256)": ", ".join(f"{name} {digest}" for name, digest
                                                  in falco.rules_hashes().items()),
                "Catalog": str(self.catalog.path),
                "Catalog (sha256)": sha256_of(self.catalog.path) or "unreadable"}

    def _node_names(self) -> list[str] | None:
        try:
            nodes = self.kube.core.list_node(label_selector=f"!{RUN_ID_LABEL}",
                                             _request_timeout=self.kube.timeout)
        except Exception:  # noqa: BLE001 - the environment line then says it is unknown
            return None
        return [n.metadata.name for n in nodes.items]

    def run_control(self, control: Control) -> ControlResult:
        """Attack every endpoint of the control, judge, collect the evidence. SuiteAbort when
        the API server stops answering at any step (its row is recorded as ERROR first)."""
        started, clock = datetime.now(timezone.utc).isoformat(timespec="milliseconds"), time.monotonic()
        expected = control.expectation(self.profile)

        def finish(verdict: Verdict, reason: str, endpoints=(), configuration=None):
            result = ControlResult(control, self.profile, expected, verdict, reason, started,
                                   time.monotonic() - clock, list(endpoints),
                                   configuration or {})
            with self._lock:
                # A control that outlived the run's deadline already has its ERROR row.
                if control.id not in self._timed_out:
                    self.results.append(result)
            return result

        if control.intrusive and not self.intrusive and self.target.kind == "existing":
            return finish(Verdict.SKIP, "intrusive attack: run with --intrusive on an "
                                        "existing cluster")
        attack = load_attack(control.attack, self.catalog.attacks_dir)
        done: list[EndpointResult] = []
        step = "discovering endpoints"
        try:
            endpoints = self.endpoints.of(attack.TARGETS)
            if not endpoints:
                if attack.TARGETS in self.endpoints.unreachable:
                    return finish(Verdict.ERROR, self.endpoints.unreachable[attack.TARGETS])
                why = self.endpoints.missing.get(attack.TARGETS,
                                                 f"no {attack.TARGETS} endpoint found")
                return finish(Verdict.SKIP, why)
            step = f"starting the {control.vantage} vantage"
            multi_node = (control.vantage == "pod"
                          and len({e.name for e in self.endpoints.of("node")}) > 1
                          and any(e.kind == "node" for e in endpoints))
            try:
                transport = (self.runner_transport if control.vantage != "pod"
                             else None if multi_node else self.pod_transport)
            except Unavailable as exc:
                return finish(Verdict.SKIP, f"vantage {control.vantage}: {exc}")
            done.extend(self._attack_endpoints(control, attack, endpoints, transport,
                                               expected))
            step = "reading the configuration evidence"
            configuration = self._configuration(control, endpoints)
            if "unavailable" in str(configuration) and not self.kube.alive():
                raise _ApiGone(step)
        except _ApiGone as gone:
            abort = self._abort(control, gone.step, gone.cleanups)
            finish(Verdict.ERROR, str(abort), done)
            raise abort from None
        except SuiteAbort:
            raise
        except Exception:
            if self.kube.alive():
                raise  # the suite's own bug: pytest shows it
            abort = self._abort(control, step, [])
            finish(Verdict.ERROR, str(abort), done)
            raise abort from None

        judged = [d for d in done if d.verdict is not Verdict.SKIP]
        if not judged:
            return finish(Verdict.SKIP, done[0].reason, done, configuration)
        # An endpoint that does not apply (SKIP, with its reason in the row) does not water
        # down the others: the verdict is the worst over the endpoints that were judged.
        verdict = worst([d.verdict for d in judged])
        reasons = [f"{d.endpoint.name} ({d.endpoint.host}): {d.reason}"
                   for d in done if d.verdict is verdict]
        # A failed cleanup is named on the row even where another endpoint decided it.
        reasons += [f"{d.endpoint.name} ({d.endpoint.host}): {d.cleanup_note}"
                    for d in done if d.verdict is not verdict and d.cleanup_note]
        return finish(verdict, "; ".join(reasons), done, configuration)

    def _attack_endpoints(self, control: Control, attack, endpoints: list[Endpoint],
                          transport: Transport, expected: Expectation) -> list[EndpointResult]:
        """Every endpoint at once (bounded): a hundred filtered nodes cost one connect
        timeout, not a hundred. Results keep the endpoints' order."""
        if len(endpoints) == 1 or self.parallelism <= 1:
            return [self._attack_endpoint(control, attack, e, transport, expected)
                    for e in endpoints]
        # Endpoints are network waits, not work: four times the control pool, so that a few
        # dozen filtered nodes still cost about one connect timeout.
        pool = DaemonPool(min(4 * self.parallelism, len(endpoints)), f"kubeprobe-{control.id}")
        try:
            futures = [pool.submit(self._attack_endpoint, control, attack, e, transport,
                                   expected) for e in endpoints]
            return [f.result() for f in futures]
        finally:
            pool.shutdown()

    def probe_image_pod_spec(self, namespace: str) -> dict[str, Any]:
        """What every pod running the probe image in `namespace` adds to its spec: the run's
        pull Secret (made there once, a run-wide journalled creation), or nothing."""
        from kubeprobe.workloads import probe_image_pod_spec
        return probe_image_pod_spec(self.probe_image_pull_secret, self.kube, namespace,
                                    self.defer_undo)

    def node_pod_access(self):
        """The privileged-pod route to a node (kubeprobe.nodepod), or None: it needs an
        intrusive run (kind and the lab are always) and a probe image to run."""
        from kubeprobe.nodepod import NodePodAccess
        if self.node_access == "direct" or self.probe_image is None:
            return None
        if self.target.kind == "existing" and not self.intrusive:
            return None
        secret = self.probe_image_pull_secret
        return NodePodAccess(self.node_access_namespace, self.probe_image,
                             self.probe_image_pod_spec if secret is not None else None,
                             secret.name if secret is not None else "")

    def _attack_endpoint(self, control: Control, attack, endpoint: Endpoint,
                         transport: Transport | None, expected: Expectation) -> EndpointResult:
        vantage_unavailable = None
        if transport is None:  # pod vantage on a multi-node cluster: placed per endpoint
            try:
                transport = self.pod_transport_for(endpoint)
            except Unavailable as exc:
                vantage_unavailable = Unavailable(f"vantage pod: {exc}")
                transport = self.runner_transport  # never used: the attack is not run
        ctx = AttackContext(run_id=self.run_id, control_id=control.id, transport=transport,
                            credentials=self.credentials, kube=self.kube,
                            workload_namespace=self.namespace.ensure,
                            connect_timeout=self.connect_timeout,
                            read_timeout=self.read_timeout, probe_image=self.probe_image,
                            probe_image_pull=(self.probe_image_pod_spec
                                              if self.probe_image_pull_secret is not None
                                              else None),
                            node_host=(None if self.node_access == "pod"
                                       else self.target.node_host),
                            node_pod=self.node_pod_access(),
                            sweep_namespaces=((lambda: self.workload_namespaces)
                                              if self.namespace_patterns else None),
                            alert_expected=expected is not Expectation.BLOCKED,
                            trusted_image=self.trusted_image,
                            supply_chain=self.supply_chain, stopping=self._stopping,
                            journal=self.journal)
        if getattr(transport, "image_note", None):
            ctx.note(transport.image_note)   # the vantage pod's image came with a pull secret
        skip_reason = None
        since = datetime.now(timezone.utc)
        try:
            try:
                if vantage_unavailable is not None:
                    raise vantage_unavailable
                observation = attack.run(ctx, endpoint, **control.params)
            except Unavailable as exc:
                skip_reason = str(exc)
                observation = Observation.inconclusive(f"not attempted: {exc}")
            except Exception as exc:  # noqa: BLE001 - an attack that breaks is an ERROR, never a pass
                observation = Observation.inconclusive(
                    f"the attack raised {type(exc).__name__}: {str(exc)[:300]}",
                    traceback=traceback.format_exc(limit=6))
        except BaseException:
            # Interrupted (SIGINT/SIGTERM): this control's cleanups run now, the run-wide
            # ones when pytest tears the session down.
            self._cleanup_on_the_way_out(control, ctx)
            raise
        # Whatever the attack saw (a refused probe of the API server, a cut exec, an
        # exception), nothing it observed counts if the API server went away meanwhile.
        if not self.kube.alive():
            self.kube.mark_gone()
            with shielded(self.interrupts):
                cleanups = ctx.run_cleanups()
            raise _ApiGone(f"attacking {endpoint.name} ({endpoint.address})", cleanups)
        with shielded(self.interrupts):
            cleanups = ctx.run_cleanups(on_error=self._note_failure)
        if self.interrupts is not None and self.interrupts.received and not self.interrupts.raised:
            self._record_failed_cleanups(control, cleanups)
            self.interrupts.check()   # a signal held during the cleanups: stop now
        if self.kube.gone:
            raise _ApiGone("cleaning up after the attack", cleanups)
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
        vantage = transport.vantage if vantage_unavailable is None else "pod"
        result = EndpointResult(endpoint, vantage, observation, verdict, reason,
                                ctx.exchanges, ctx.notes, cleanups, alert_evidence)
        if result.failed_cleanups:
            # FAIL stays FAIL (the attack's finding stands); anything else cannot be trusted
            # with objects left behind: ERROR. Either way the row names the failed step.
            if verdict is not Verdict.FAIL:
                result.verdict = Verdict.ERROR
            result.reason += "; " + result.cleanup_note
            self._record_failed_cleanups(control, cleanups)
        return result

    def _record_failed_cleanups(self, control: Control, cleanups: list[Cleanup]) -> None:
        self.failed_cleanups += [(control.id, c.description, c.error)
                                 for c in cleanups if c.error]

    def _cleanup_on_the_way_out(self, control: Control, ctx: AttackContext) -> None:
        """The run is being interrupted: the control's registered cleanups, shielded from
        further signals, their failures recorded for the last line."""
        with shielded(self.interrupts):
            self._record_failed_cleanups(control, ctx.run_cleanups(on_error=self._note_failure))

    def _wait_for_alert(self, control: Control, ctx: AttackContext,
                        since: datetime) -> tuple[bool, bool | None, dict | None]:
        """(source configured, alerted, evidence) for a control that expects an alert."""
        matcher = parse_matcher(control.alert, nonce=ctx.nonce)
        source = self.alert_sources.get(matcher.source)
        if source is None:
            why = self.alert_sources_unavailable.get(matcher.source)
            if why is None:
                return False, None, None
            return False, None, {"source": matcher.source,
                                 "matcher": {"rule": matcher.rule, "fields": matcher.fields,
                                             "nonce": matcher.nonce},
                                 "matched": None, "alerts_in_window": [],
                                 "reason": f"the {matcher.source} alert source could not "
                                           f"start: {why}"}
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
