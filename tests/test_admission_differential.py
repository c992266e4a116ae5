"""The differential proof behind every admission-type verdict (kubeprobe.admission).

The API server's answers here are ApiExceptions carrying the Status bodies the API server
sends (shapes copied from the lab's answers); the end-to-end proof is the negative control on
the hardened, weak and decoy labs. These tests pin the decision: a refusal counts only when
the twin was admitted, a dry-run refusal by a webhook falls back to real writes (cleanup
registered first) in the run's namespace and to "not judged" elsewhere.
"""
from __future__ import annotations

import json

from kubernetes.client.rest import ApiException

from kubeprobe.admission import Write, differential, with_sweep
from kubeprobe.journal import ObjectRef
from kubeprobe.outcome import Authority, Outcome

VAP_DENIAL = ("pods \"p\" is forbidden: ValidatingAdmissionPolicy 'kubeprobe-pod-security' "
              "with binding 'kubeprobe-pod-security' denied request: privileged containers "
              "are not allowed")
UNRELATED_DENIAL = ("pods \"p\" is forbidden: ValidatingAdmissionPolicy 'decoy-team-label' "
                    "with binding 'decoy-team-label' denied request: pods need a team label")
NO_DRY_RUN = 'admission webhook "legacy.example.com" does not support dry run'


def api_error(code: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=code, reason=reason)
    exc.body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": message, "reason": reason, "code": code})
    return exc


class FakeKubeRecordingDeletes:
    """A fake (no API server in these tests): records the objects the cleanups delete."""
    timeout = (1.0, 1.0)

    def __init__(self):
        self.deleted = []

    def delete_object(self, ref):
        self.deleted.append(ref.name)
        return True


class RecordingWrite:
    """A write whose API answer is given per mode (dry run / real), recording every send."""

    def __init__(self, what, dry_answer=None, real_answer=None):
        self.what, self.sent = what, []
        self.answers = {"All": dry_answer, None: real_answer}

    def write(self) -> Write:
        def send(dry_run):
            self.sent.append(dry_run)
            answer = self.answers[dry_run]
            if isinstance(answer, Exception):
                raise answer
            return {"stored": self.what}
        return Write(self.what, {"kind": "Pod"}, send,
                     undo=ObjectRef("v1", "Pod", "selftest", self.what))


def test_refusal_counts_only_when_the_twin_is_admitted(make_ctx):
    ctx = make_ctx()
    twin = RecordingWrite("twin")
    attack = RecordingWrite("attack", dry_answer=api_error(403, "Forbidden", VAP_DENIAL))
    observation, pair = differential(ctx, "privileged", twin.write(), attack.write())
    assert observation.outcome is Outcome.BLOCKED
    assert observation.authority is Authority.ADMISSION_DENIAL
    assert twin.sent == ["All"] and attack.sent == ["All"]  # dry runs only, nothing stored
    evidence = observation.evidence["differential"]
    assert evidence["twin (without the property)"]["answer"] == "admitted"
    assert "kubeprobe-pod-security" in evidence["attack (with the property)"]["answer"]


def test_a_policy_that_refuses_the_twin_too_proves_nothing(make_ctx):
    ctx = make_ctx()
    refused = api_error(403, "Forbidden", UNRELATED_DENIAL)
    twin = RecordingWrite("twin", dry_answer=refused)
    attack = RecordingWrite("attack", dry_answer=refused)
    observation, _ = differential(ctx, "privileged", twin.write(), attack.write())
    assert observation.outcome is Outcome.INCONCLUSIVE
    assert "decoy-team-label" in observation.summary  # names who refused the twin
    assert attack.sent == []  # the attack is not even sent


def test_admitted_attack_is_succeeded(make_ctx):
    observation, _ = differential(make_ctx(), "privileged", RecordingWrite("twin").write(),
                                  RecordingWrite("attack").write())
    assert observation.outcome is Outcome.SUCCEEDED


def test_webhook_without_dry_run_falls_back_to_real_writes_with_cleanup_first(make_ctx):
    kube = FakeKubeRecordingDeletes()
    ctx = make_ctx(kube=kube)
    no_dry = api_error(400, "BadRequest", NO_DRY_RUN)
    twin = RecordingWrite("twin", dry_answer=no_dry)
    attack = RecordingWrite("attack", dry_answer=no_dry,
                            real_answer=api_error(403, "Forbidden", VAP_DENIAL))
    observation, pair = differential(ctx, "privileged", twin.write(), attack.write())
    assert observation.outcome is Outcome.BLOCKED
    assert twin.sent == ["All", None] and attack.sent == [None]
    assert "legacy.example.com" in pair.fallback
    assert [c.description for c in ctx._cleanups] == ["delete Pod selftest/twin",
                                                      "delete Pod selftest/attack"]
    ctx.run_cleanups()
    assert kube.deleted == ["attack", "twin"]


def test_sweep_names_every_namespace_that_would_admit_and_never_writes_there(make_ctx):
    ctx = make_ctx(sweep_namespaces=lambda: ["team-a", "team-b", "legacy"])
    writes = {}

    def pair(namespace):
        denial = api_error(403, "Forbidden", VAP_DENIAL)
        no_dry = api_error(400, "BadRequest", NO_DRY_RUN)
        attack_answer = {"team-a": None, "team-b": denial, "legacy": no_dry}[namespace]
        writes[namespace] = (RecordingWrite("twin"),
                             RecordingWrite("attack", dry_answer=attack_answer,
                                            real_answer=AssertionError("no real write here")))
        return writes[namespace][0].write(), writes[namespace][1].write()

    blocked = differential(ctx, "privileged", RecordingWrite("twin").write(),
                           RecordingWrite("attack", dry_answer=api_error(
                               403, "Forbidden", VAP_DENIAL)).write())[0]
    observation = with_sweep(ctx, blocked, "privileged", pair)
    assert observation.outcome is Outcome.SUCCEEDED
    assert "team-a" in observation.summary and "team-b" not in observation.summary
    tried = observation.evidence["namespaces"]["namespaces tried"]
    assert tried["team-a"].startswith("ADMITTED") and tried["team-b"].startswith("blocked")
    assert tried["legacy"].startswith("not judged")
    assert all(None not in w.sent for twin_attack in writes.values() for w in twin_attack)
