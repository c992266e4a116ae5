"""Alert parsing and matching, and the live sources over real loopback sockets and files.
Falco itself cannot run here: its alerts are built in Falco's documented JSON shape."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests

from kubeprobe.alerts import (AuditLogSource, AuditWebhookReceiver, FalcoHttpReceiver,
                              LineSource, MissingSource, audit_event, falco_alert,
                              parse_matcher)

NOW = datetime.now(timezone.utc)


def falco_json(rule: str, cmdline: str, when: datetime = NOW, container: str = "etcd") -> dict:
    # Falco json_output: time with nanoseconds, output_fields keyed by field name.
    return {"time": when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z", "rule": rule,
            "priority": "Warning", "source": "syscall", "hostname": "node-1",
            "output": f"Unexpected process (proc.cmdline={cmdline} container.name={container})",
            "output_fields": {"proc.cmdline": cmdline, "container.name": container,
                              "k8s.ns.name": "kube-system", "k8s.pod.name": "etcd-node-1"},
            "tags": ["kubeprobe"]}


def audit_json(uri: str, when: datetime = NOW, code: int = 403) -> dict:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": "0b0c", "stage": "ResponseComplete", "requestURI": uri, "verb": "list",
            "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
            "sourceIPs": ["192.0.2.2"], "objectRef": {"resource": "secrets",
                                                      "namespace": "kube-system"},
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": when.isoformat(), "stageTimestamp": when.isoformat()}


RULE = "kubeprobe: unexpected process in etcd"
TOKEN = "selftest-receiver-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
MATCHER = {"source": "falco", "rule": RULE, "fields": {"container.name": "etcd"}}


def test_falco_alert_parses_nanosecond_time_and_fields():
    alert = falco_alert(falco_json(RULE, "etcdctl version"))
    assert alert.rule == RULE and alert.fields["container.name"] == "etcd"
    assert abs((alert.time - NOW).total_seconds()) < 1


def test_matcher_needs_rule_fields_nonce_and_time():
    alert = falco_alert(falco_json(RULE, "etcdctl --endpoints=unix:///kubeprobe-abc123 version"))
    assert parse_matcher(MATCHER, nonce="abc123").matches(alert, NOW - timedelta(seconds=1))
    assert not parse_matcher(MATCHER, nonce="zzz999").matches(alert, NOW - timedelta(seconds=1))
    assert not parse_matcher(MATCHER, nonce="abc123").matches(alert, NOW + timedelta(seconds=5))
    other = {**MATCHER, "rule": "Terminal shell in container"}
    assert not parse_matcher(other, nonce="abc123").matches(alert, NOW - timedelta(seconds=1))
    wrong_field = {**MATCHER, "fields": {"container.name": "kube-apiserver"}}
    assert not parse_matcher(wrong_field).matches(alert, NOW - timedelta(seconds=1))


def test_audit_event_fields_are_flattened_and_globbed():
    alert = audit_event(audit_json("/api/v1/secrets?labelSelector=kubeprobe-nonce%3Dn1"))
    assert alert.fields["user.username"] == "system:anonymous"
    assert alert.fields["responseStatus.code"] == 403
    matcher = parse_matcher({"source": "audit", "fields": {"requestURI": "*kubeprobe-nonce*",
                                                           "responseStatus.code": "403"}},
                            nonce="n1")
    assert matcher.matches(alert, NOW - timedelta(seconds=1))


def test_audit_event_of_a_dry_run_never_matches():
    """A server-side dry run (the admission twins and sweeps) changed nothing: an alert on it
    would credit a detector with an action that never happened."""
    dry = audit_event(audit_json("/api/v1/secrets?labelSelector=kubeprobe-nonce%3Dn1&dryRun=All"))
    matcher = parse_matcher({"source": "audit", "fields": {"requestURI": "*kubeprobe-nonce*"}},
                            nonce="n1")
    assert not matcher.matches(dry, NOW - timedelta(seconds=1))


@pytest.mark.parametrize(("raw", "message"), [
    ({"source": "audit", "rule": "Anonymous Request Allowed", "fields": {"a": 1}},
     "not allowed for source audit"),
    ({"source": "syslog", "rule": "x"}, "alert.source"),
    ({"source": "falco"}, "alert.rule is required"),
    ({"source": "audit"}, "alert.fields is required"),
    ({"source": "audit", "fields": {"a": 1}, "extra": 1}, "unknown field(s) extra"),
])
def test_bad_matchers_name_the_field(raw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_matcher(raw)


def test_http_receiver_concurrent_waits_each_get_their_own_alert():
    receiver = FalcoHttpReceiver(token=TOKEN)
    receiver.start()
    try:
        since = NOW - timedelta(seconds=1)
        results = {}

        def wait(nonce):
            results[nonce] = receiver.wait_for(parse_matcher(MATCHER, nonce=nonce), since, 10)
        waiters = [threading.Thread(target=wait, args=(n,)) for n in ("n-one", "n-two")]
        for t in waiters:
            t.start()
        url = f"http://127.0.0.1:{receiver.port}/"
        for nonce in ("n-two", "n-one"):
            answer = requests.post(url, json=falco_json(RULE, f"etcdctl kubeprobe-{nonce}"),
                                   headers=BEARER, timeout=5)
            assert answer.status_code == 200
        for t in waiters:
            t.join(15)
        assert results["n-one"].matched.fields["proc.cmdline"].endswith("n-one")
        assert results["n-two"].matched.fields["proc.cmdline"].endswith("n-two")
        assert requests.post(url, data=b"not json", headers=BEARER,
                             timeout=5).status_code == 400
    finally:
        receiver.stop()


def test_missing_alert_returns_what_did_arrive():
    source = LineSource("falco")
    source.feed(json.dumps(falco_json("Some other rule", "bash")))
    source.feed("Falco initialized with configuration file /etc/falco/falco.yaml")
    result = source.wait_for(parse_matcher(MATCHER, nonce="nope"), NOW - timedelta(seconds=1),
                             deadline_s=0.3)
    assert result.matched is None
    assert [a.rule for a in result.seen] == ["Some other rule"]
    assert "no matching falco alert" in result.reason


def test_audit_tailer_sees_only_lines_appended_after_start(tmp_path):
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(audit_json("/before?kubeprobe-nonce=old")) + "\n")
    source = AuditLogSource(log, poll_s=0.02)
    source.start()
    try:
        with log.open("a") as handle:
            handle.write(json.dumps(audit_json("/after?kubeprobe-nonce=new")) + "\n")
        matcher = parse_matcher({"source": "audit", "fields": {"requestURI": "*kubeprobe*"}})
        result = source.wait_for(matcher, NOW - timedelta(seconds=5), deadline_s=5)
        assert result.matched is not None and "new" in result.matched.fields["requestURI"]
        assert all("old" not in a.fields["requestURI"] for a in result.seen)
    finally:
        source.stop()


def test_audit_webhook_receiver_ingests_an_event_list(tmp_path):
    from kubeprobe.pki import tls_server
    ca, server = tls_server(("127.0.0.1",))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    receiver = AuditWebhookReceiver(token=TOKEN, tls=server.server_context())
    receiver.start()
    try:
        body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                "items": [audit_json("/api/v1/secrets?kubeprobe-nonce=w1")]}
        assert requests.post(f"https://127.0.0.1:{receiver.port}/", json=body, headers=BEARER,
                             timeout=5, verify=tmp_path / "ca.pem").status_code == 200
        matcher = parse_matcher({"source": "audit", "fields": {"verb": "list"}}, nonce="w1")
        assert receiver.wait_for(matcher, NOW - timedelta(seconds=1), 5).matched is not None
        # As the API server sends them: items without kind/apiVersion (the list types them).
        bare = {k: v for k, v in audit_json("/api/v1/secrets?kubeprobe-nonce=w2").items()
                if k not in ("kind", "apiVersion")}
        assert requests.post(f"https://127.0.0.1:{receiver.port}/", headers=BEARER, timeout=5,
                             verify=tmp_path / "ca.pem",
                             json={**body, "items": [bare]}).status_code == 200
        got = receiver.wait_for(parse_matcher({"source": "audit", "fields": {"verb": "list"}},
                                              nonce="w2"), NOW - timedelta(seconds=1), 5)
        assert got.matched is not None and got.matched.raw["kind"] == "Event"
        # An item of another kind is still not an audit event: the batch is refused.
        answer = requests.post(f"https://127.0.0.1:{receiver.port}/", headers=BEARER, timeout=5,
                               verify=tmp_path / "ca.pem",
                               json={**body, "items": [{**bare, "kind": "Pod"}]})
        assert answer.status_code == 400
    finally:
        receiver.stop()


def test_missing_source_fails_at_once_with_the_reason():
    source = MissingSource("audit", "no --audit-log-path")
    result = source.wait_for(parse_matcher({"source": "audit", "fields": {"verb": "list"}}),
                             NOW, deadline_s=30)
    assert result.matched is None and result.reason == "no --audit-log-path"
