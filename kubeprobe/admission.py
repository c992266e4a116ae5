"""Differential proof for admission-type controls.

A refusal proves an admission control only when the same request minus the property under
test (the *positive twin*), sent by the same identity to the same namespace, is admitted:
otherwise an unrelated policy, a quota, a webhook that is down or a deny-everything rule
could be what refused the attack. So every admission-type attack sends two writes:

    twin    the request without the violating property: must be ADMITTED
    attack  the same request with it: BLOCKED only if refused by a recognised admission
            authority (kubeprobe.apiwire) while the twin was admitted

Both go as server-side dry runs (`dryRun=All`: authentication, authorization, mutating and
validating admission run, nothing is stored, nothing to clean up). A webhook whose
sideEffects forbid dry runs makes the API server answer `admission webhook "x" does not
support dry run`: then both are sent for real, with their undo record registered first.

Admission is often scoped per namespace (Pod Security labels, namespace selectors), so
`sweep` sends the same pair, as dry runs only, to every workload namespace the suite was
given: a namespace where the attack would be admitted is a FAIL with its name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from kubernetes.client.rest import ApiException

from kubeprobe.apiwire import classify_api_error, status_of
from kubeprobe.context import AttackContext
from kubeprobe.journal import ObjectRef
from kubeprobe.outcome import Observation, Outcome

DRY_RUN_UNSUPPORTED = re.compile(r'admission webhook "([^"]+)" does not support dry run')
DRY_RUN = "All"


@dataclass(frozen=True)
class Write:
    """One API write an attack makes: a create or a patch, described for the evidence.

    `send(dry_run)` performs it (dry_run is "All" or None) and returns the API's answer or
    raises ApiException. `undo` names what a real (non dry-run) send creates
    (kubeprobe.journal.ObjectRef); it is journalled and registered as a cleanup BEFORE the
    real send."""
    what: str
    request: dict[str, Any]
    send: Callable[[str | None], Any]
    undo: ObjectRef | None = None


@dataclass
class Answer:
    """What the API server said to one Write."""
    write: Write
    dry_run: bool
    admitted: bool
    result: Any = None
    refusal: Observation | None = None     # classified, when refused
    status: dict[str, Any] | None = None

    @property
    def dry_run_unsupported(self) -> str | None:
        if self.status is None:
            return None
        found = DRY_RUN_UNSUPPORTED.search(str(self.status.get("message", "")))
        return found.group(1) if found else None

    @property
    def who_refused(self) -> str:
        if self.refusal is None:
            return "nobody"
        mechanism = self.refusal.evidence.get("mechanism")
        if mechanism:
            return mechanism
        status = self.status or {}
        return (f"HTTP {status.get('code')} {status.get('reason')}: "
                f"{str(status.get('message'))[:200]}")

    def to_json(self) -> dict[str, Any]:
        answer = ("admitted" if self.admitted else f"refused by {self.who_refused}")
        return {"write": self.write.what, "request": self.write.request,
                "dry_run": self.dry_run, "answer": answer, "status": self.status}


def send(ctx: AttackContext, write: Write, dry_run: bool) -> Answer:
    if not dry_run and write.undo is not None:
        ctx.defer_undo(write.undo)
    try:
        result = write.send(DRY_RUN if dry_run else None)
    except ApiException as exc:
        return Answer(write, dry_run, False, refusal=classify_api_error(exc, write.what),
                      status=status_of(exc))
    if not dry_run:
        ctx.note(f"the API server stored: {write.what}")
    return Answer(write, dry_run, True, result=result)


@dataclass
class Differential:
    """The twin and the attack, as sent and answered: the evidence of the verdict."""
    property: str
    twin: Answer
    attack: Answer | None = None
    fallback: str | None = None          # why real writes were used instead of dry runs

    def to_json(self) -> dict[str, Any]:
        return {"property under test": self.property,
                "mode": ("server-side dry run (dryRun=All)" if self.twin.dry_run
                         else "real writes (deleted again)"),
                "fallback": self.fallback,
                "twin (without the property)": self.twin.to_json(),
                "attack (with the property)": self.attack.to_json() if self.attack else None}


def differential(ctx: AttackContext, property_under_test: str, twin: Write, attack: Write,
                 real_writes_allowed: bool = True) -> tuple[Observation, Differential]:
    """Send the twin, then the attack, as dry runs; judge the attack only if the twin was
    admitted. Where a webhook refuses dry runs, both are sent for real if
    `real_writes_allowed` (the run's own namespace), else the pair is not judged.

    Returns the observation and the differential evidence (also attached to the
    observation). SUCCEEDED carries the attack's answer in `pair.attack.result`; after a
    dry run the caller decides whether to materialise it."""
    pair = Differential(property_under_test, send(ctx, twin, dry_run=True))
    if not pair.twin.dry_run_unsupported and pair.twin.admitted:
        pair.attack = send(ctx, attack, dry_run=True)
    # The webhook may match only the attack: then both are repeated so they stay a pair.
    unsupported = pair.twin.dry_run_unsupported or (pair.attack and
                                                    pair.attack.dry_run_unsupported)
    if unsupported:
        pair.fallback = f'admission webhook "{unsupported}" does not support dry run'
        if not real_writes_allowed:
            observation = Observation.inconclusive(
                f"{pair.fallback}, and no real write is made here")
            observation.evidence["differential"] = pair.to_json()
            return observation, pair
        pair.fallback += ": both requests were sent for real"
        ctx.note(pair.fallback)
        pair.twin, pair.attack = send(ctx, twin, dry_run=False), None
        if pair.twin.admitted:
            pair.attack = send(ctx, attack, dry_run=False)
    if not pair.twin.admitted:
        return _twin_refused(pair), pair
    return _judge(pair), pair


def _twin_refused(pair: Differential) -> Observation:
    observation = Observation.inconclusive(
        f"the positive twin ({pair.twin.write.what}) was refused too, by "
        f"{pair.twin.who_refused}: a refusal of the attack could not be told apart from "
        f"that authority, so it proves nothing about the control ({pair.property})")
    observation.evidence["differential"] = pair.to_json()
    return observation


def _judge(pair: Differential) -> Observation:
    attack = pair.attack
    mode = "for real" if pair.fallback else "as a dry run"
    if attack.admitted:
        observation = Observation.succeeded(
            f"{attack.write.what}: admitted {mode} (its twin without {pair.property} was "
            "admitted too)")
    else:
        refusal = attack.refusal
        summary = refusal.summary
        if refusal.outcome is Outcome.BLOCKED:
            summary += (f"; the same request without {pair.property} was admitted {mode}, so "
                        "this refusal is about that property")
        observation = Observation(refusal.outcome, summary, refusal.authority,
                                  dict(refusal.evidence))
    observation.evidence["differential"] = pair.to_json()
    return observation


# -- every workload namespace ------------------------------------------------------------
@dataclass
class SweepResult:
    tried: dict[str, str] = field(default_factory=dict)   # namespace -> what happened
    admitted: list[str] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"namespaces tried": self.tried, "admitted in": self.admitted,
                "not judged": self.not_judged}


def sweep(ctx: AttackContext, property_under_test: str,
          make_pair: Callable[[str], tuple[Write, Write]]) -> SweepResult:
    """Dry-run twin and attack in every namespace of `ctx.sweep_namespaces()` (never real
    writes: these are other people's namespaces)."""
    result = SweepResult()
    for namespace in ctx.sweep_namespaces() if ctx.sweep_namespaces else []:
        twin, attack = make_pair(namespace)
        observation, pair = differential(ctx, property_under_test, twin, attack,
                                         real_writes_allowed=False)
        if pair.fallback:
            result.tried[namespace] = f"not judged: {pair.fallback}"
            result.not_judged.append(namespace)
        elif observation.outcome is Outcome.SUCCEEDED:
            result.tried[namespace] = "ADMITTED (dry run)"
            result.admitted.append(namespace)
        elif observation.outcome is Outcome.BLOCKED:
            result.tried[namespace] = f"blocked by {pair.attack.who_refused}"
        else:
            result.tried[namespace] = f"not judged: {observation.summary}"
            result.not_judged.append(namespace)
    return result


def with_sweep(ctx: AttackContext, observation: Observation, property_under_test: str,
               make_pair: Callable[[str], tuple[Write, Write]]) -> Observation:
    """Fold the namespace sweep into the run-namespace observation: any namespace where the
    attack would be admitted makes it SUCCEEDED (named); the namespaces tried are listed."""
    if ctx.sweep_namespaces is None:
        return observation
    found = sweep(ctx, property_under_test, make_pair)
    if found.admitted:
        run_namespace = observation.summary
        observation = Observation.succeeded(
            f"would be admitted (dry run) in namespace(s) {', '.join(found.admitted)} "
            f"[run namespace: {run_namespace}]", **observation.evidence)
    observation.evidence["namespaces"] = found.to_json()
    if found.not_judged:
        ctx.note("not judged in namespace(s): " + ", ".join(
            f"{ns} ({found.tried[ns]})" for ns in found.not_judged))
    return observation


def pod_write(ctx: AttackContext, what: str, body: dict, namespace: str) -> Write:
    """Create a Pod (dry run or real, its undo record registered before a real one)."""
    return create_write(ctx, what, namespace, body, ctx.kube.core.create_namespaced_pod)


def create_write(ctx: AttackContext, what: str, namespace: str | None, body: dict,
                 create_fn: Callable[..., Any]) -> Write:
    from kubeprobe.workloads import stamped
    ref = ObjectRef.of(stamped(ctx, body), namespace)
    timeout = ctx.kube.timeout
    create_args = (namespace, body) if namespace else (body,)
    return Write(what=f"{what} ({ref.kind} {ref.where})", request=summarise(body),
                 send=lambda dry_run: create_fn(*create_args, dry_run=dry_run,
                                                _request_timeout=timeout),
                 undo=ref)


def summarise(body: dict) -> dict[str, Any]:
    """The request as evidence: kind, name, namespace and spec (never secret material)."""
    meta = body.get("metadata", {})
    return {"kind": body.get("kind"), "name": meta.get("name"), "spec": body.get("spec")}
