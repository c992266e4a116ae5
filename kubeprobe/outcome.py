"""What an attack observed, and the verdict a control gets from it.

An attack returns an `Observation`:
  SUCCEEDED     the attack obtained something (with what it obtained as evidence)
  BLOCKED       an authority refused it, named as an `Authority`: positive proof only
  INCONCLUSIVE  nothing proves either way (timeout, filtered port, unexpected answer)

BLOCKED is only ever built from a recognised refusal (see `Authority`): never from an
arbitrary exception, a timeout or an unreachable host.

The control's verdict (`judge`):
  PASS          the expected outcome was observed, with the accepted authority
  FAIL          the attack succeeded, or it was blocked by a weaker authority than required
  ERROR         the observation was inconclusive, or the attack itself broke
  SKIP          the control does not apply to this target (reason given)
  NOT_VERIFIED  an alert was expected but no alert source is configured: never a PASS
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class Outcome(str, enum.Enum):
    SUCCEEDED = "SUCCEEDED"
    BLOCKED = "BLOCKED"
    INCONCLUSIVE = "INCONCLUSIVE"


class Authority(str, enum.Enum):
    """Who or what refused the attack: the positive proof behind BLOCKED."""
    TLS_CLIENT_CERT_ALERT = "tls_client_cert_alert"  # TLS alert: client cert missing/untrusted
    TLS_REQUIRED = "tls_required"                    # plaintext refused on a port that speaks TLS
    HTTP_401 = "http_401"                            # authentication refused
    HTTP_403 = "http_403"                            # authenticated (or anonymous) but not authorised
    ADMISSION_DENIAL = "admission_denial"            # admission controller/policy message
    CONNECTION_REFUSED = "connection_refused"        # nothing listens (TCP RST)


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIP = "SKIP"
    NOT_VERIFIED = "NOT-VERIFIED"


class Expectation(str, enum.Enum):
    BLOCKED = "BLOCKED"
    ALERTED = "ALERTED"
    BLOCKED_OR_ALERTED = "BLOCKED_OR_ALERTED"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Observation:
    outcome: Outcome
    summary: str                                  # one line an auditor can read
    authority: Authority | None = None            # set iff BLOCKED
    evidence: dict[str, Any] = field(default_factory=dict)
    observed_at: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if (self.outcome is Outcome.BLOCKED) != (self.authority is not None):
            raise ValueError("an Observation is BLOCKED if and only if it names its authority")

    @classmethod
    def blocked(cls, by: Authority, summary: str, **evidence: Any) -> "Observation":
        return cls(Outcome.BLOCKED, summary, by, evidence)

    @classmethod
    def succeeded(cls, summary: str, **evidence: Any) -> "Observation":
        return cls(Outcome.SUCCEEDED, summary, None, evidence)

    @classmethod
    def inconclusive(cls, summary: str, **evidence: Any) -> "Observation":
        return cls(Outcome.INCONCLUSIVE, summary, None, evidence)

    @property
    def observed(self) -> str:
        """Short form for the report's Observed column."""
        if self.outcome is Outcome.BLOCKED:
            return f"BLOCKED ({self.authority.value})"
        return self.outcome.value

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "summary": self.summary,
                "authority": self.authority.value if self.authority else None,
                "evidence": self.evidence, "observed_at": self.observed_at}


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str


def judge(expected: Expectation, accepted: frozenset[Authority], observation: Observation,
          weaker: dict[Authority, str], alert_source_configured: bool = False,
          alerted: bool | None = None) -> Judgement:
    """Turn one observation into a verdict. Pure: everything it decides on is an argument.

    `accepted` is the set of authorities that count as the control holding; a refusal by
    any other authority is a weaker state and FAILS, with the catalog's explanation from
    `weaker` (e.g. kubelet 403: anonymous auth is on, only authorization said no).
    `alerted` is None when no alert was looked for.
    """
    outcome = observation.outcome
    if outcome is Outcome.INCONCLUSIVE:
        return Judgement(Verdict.ERROR, f"inconclusive: {observation.summary}")

    if outcome is Outcome.BLOCKED and expected in (Expectation.BLOCKED,
                                                   Expectation.BLOCKED_OR_ALERTED):
        if observation.authority in accepted:
            return Judgement(Verdict.PASS, f"blocked by {observation.authority.value}: "
                                           f"{observation.summary}")
        why = weaker.get(observation.authority, "this authority is not accepted for the control")
        accepted_names = ", ".join(sorted(a.value for a in accepted))
        return Judgement(Verdict.FAIL, f"blocked only by {observation.authority.value} "
                                       f"(requires {accepted_names}): {why}")

    if expected is Expectation.BLOCKED:
        return Judgement(Verdict.FAIL, f"not blocked: {observation.summary}")

    # ALERTED or BLOCKED_OR_ALERTED and the attack went through (or was blocked where only an
    # alert is expected): the detector must have fired for this attack.
    if not alert_source_configured:
        return Judgement(Verdict.NOT_VERIFIED, "an alert is expected but no alert source is "
                                               f"configured (attack: {observation.summary})")
    if alerted:
        return Judgement(Verdict.PASS, f"alerted: {observation.summary}")
    return Judgement(Verdict.FAIL, f"no matching alert: {observation.summary}")
