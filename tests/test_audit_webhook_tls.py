"""The audit webhook receiver over TLS, without a lab: the API server (client-go) sends the
webhook kubeconfig's bearer token only over TLS, so the receiver speaks TLS by default.

- Real HTTPS POSTs to the real `AuditWebhookReceiver` on loopback: with a certificate from a
  CA the client trusts and the token, ingested; a client that trusts another CA refuses the
  receiver; plain HTTP to the TLS port is cut at the handshake (counted as refused); a wrong
  token is 401 over TLS too.
- `--audit-webhook-insecure` is plain HTTP: with a token the token is still required (a
  TLS-terminating proxy in front forwards it); without one, none.
- The suite's options: --audit-webhook-cert/--audit-webhook-key checked up front (unreadable,
  not PEM, not a pair, one without the other, with -insecure, without --audit-webhook: one
  line, exit 2, the key never echoed).
- A whole run with no certificate given: the per-run CA is written to
  <reports-dir>/audit-webhook-ca.pem and said in one line, and an attack that POSTs an audit
  EventList to the receiver trusting only that file (and its 127.0.0.1 IP SAN) with the token
  PASSes its control; the same with a wrong token FAILs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from kubeprobe.alerts import AuditWebhookReceiver, parse_matcher
from kubeprobe.pki import tls_server
from tests.standin_apiserver import StandInApiServer
from tests.test_alerts import audit_json
from tests.test_bad_input import CATALOG, assert_one_clear_line, closed_port
from tests.test_receiver import run_suite_env

REPO = Path(__file__).resolve().parent.parent
TOKEN = "selftest-webhook-tls-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def event_list(nonce: str) -> dict:
    return {"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
            "items": [audit_json(f"/api/v1/secrets?kubeprobe-nonce={nonce}",
                                 when=datetime.now(timezone.utc))]}


def ingested(receiver: AuditWebhookReceiver, nonce: str) -> bool:
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    matcher = parse_matcher({"source": "audit", "fields": {"verb": "list"}}, nonce=nonce)
    return receiver.wait_for(matcher, since, 0.2).matched is not None


@pytest.fixture
def pki(tmp_path):
    ca, server = tls_server(("127.0.0.1",))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "server.pem").write_bytes(server.cert_pem)
    (tmp_path / "server.key").write_bytes(server.key_pem)
    return ca, server, tmp_path


def test_tls_with_the_token_is_ingested_and_nothing_else_is(pki):
    _, server, tmp = pki
    receiver = AuditWebhookReceiver("127.0.0.1", 0, token=TOKEN, tls=server.server_context())
    receiver.start()
    try:
        url = f"https://127.0.0.1:{receiver.port}/"
        assert receiver.scheme == "https" and url[:-1] in receiver.describe()
        answer = requests.post(url, json=event_list("tls1"), headers=BEARER,
                               verify=tmp / "ca.pem", timeout=5)
        assert answer.status_code == 200 and ingested(receiver, "tls1")
        # Over TLS a wrong token is still 401, and nothing is ingested.
        answer = requests.post(url, json=event_list("tls2"), verify=tmp / "ca.pem", timeout=5,
                               headers={"Authorization": "Bearer not-the-token-0123456789"})
        assert answer.status_code == 401 and not ingested(receiver, "tls2")
        # A client trusting another CA refuses the receiver's certificate.
        other, _ = tls_server(("127.0.0.1",))
        (tmp / "other.pem").write_bytes(other.cert_pem)
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(url, json=event_list("tls3"), headers=BEARER,
                          verify=tmp / "other.pem", timeout=5)
        # Plain HTTP to the TLS port: cut at the handshake, the token never read.
        with pytest.raises(requests.ConnectionError):
            requests.post(f"http://127.0.0.1:{receiver.port}/", json=event_list("tls4"),
                          headers=BEARER, timeout=5)
        assert not ingested(receiver, "tls3") and not ingested(receiver, "tls4")
        status = receiver.status()
        assert status["accepted"] == 1
        assert status["refused"] == {"401 missing or wrong token": 1,
                                     "TLS handshake failed": 2}
    finally:
        receiver.stop()


def test_insecure_is_plain_http_and_keeps_a_given_token(pki):
    _, server, _ = pki
    with pytest.raises(ValueError, match="speaks TLS"):
        AuditWebhookReceiver(token=TOKEN)
    with pytest.raises(ValueError, match="plain HTTP: not with a TLS certificate"):
        AuditWebhookReceiver(token=TOKEN, insecure=True, tls=server.server_context())
    proxied = AuditWebhookReceiver("127.0.0.1", 0, token=TOKEN, insecure=True)
    open_one = AuditWebhookReceiver("127.0.0.1", 0, insecure=True)
    assert proxied.token == TOKEN and "plain HTTP" in proxied.describe()
    assert open_one.token is None and "INSECURE" in open_one.describe()
    for receiver in (proxied, open_one):
        receiver.start()
    try:
        url = f"http://127.0.0.1:{proxied.port}/"
        assert requests.post(url, json=event_list("px1"), timeout=5).status_code == 401
        assert requests.post(url, json=event_list("px2"), headers=BEARER,
                             timeout=5).status_code == 200
        assert not ingested(proxied, "px1") and ingested(proxied, "px2")
        assert requests.post(f"http://127.0.0.1:{open_one.port}/", json=event_list("op1"),
                             timeout=5).status_code == 200
        assert ingested(open_one, "op1")
    finally:
        for receiver in (proxied, open_one):
            receiver.stop()


def test_the_operators_certificate_files(pki):
    from kubeprobe.pki import load_server_context
    _, server, tmp = pki
    assert load_server_context(tmp / "server.pem", tmp / "server.key") is not None
    other = tls_server(("127.0.0.1",))[1]
    (tmp / "other.key").write_bytes(other.key_pem)
    with pytest.raises(ValueError, match="is not the key of the certificate"):
        load_server_context(tmp / "server.pem", tmp / "other.key")
    with pytest.raises(ValueError, match="cannot be read"):
        load_server_context(tmp / "missing.pem", tmp / "server.key")
    (tmp / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="are not a PEM certificate"):
        load_server_context(tmp / "junk.pem", tmp / "server.key")


@pytest.mark.parametrize("args, expected", [
    (["--audit-webhook", "127.0.0.1:2802", "--audit-webhook-cert", "{tmp}/server.pem",
      "--audit-webhook-key", "{tmp}/other.key"],
     "--audit-webhook-cert/--audit-webhook-key: the key {tmp}/other.key is not the key of"),
    (["--audit-webhook", "127.0.0.1:2802", "--audit-webhook-cert", "{tmp}/missing.pem",
      "--audit-webhook-key", "{tmp}/server.key"], "the certificate {tmp}/missing.pem cannot be"),
    (["--audit-webhook", "127.0.0.1:2802", "--audit-webhook-cert", "{tmp}/server.pem"],
     "--audit-webhook-cert and --audit-webhook-key go together"),
    (["--audit-webhook-cert", "{tmp}/server.pem", "--audit-webhook-key", "{tmp}/server.key"],
     "--audit-webhook-cert without --audit-webhook"),
    (["--audit-webhook", "127.0.0.1:2802", "--audit-webhook-insecure", "--audit-webhook-cert",
      "{tmp}/server.pem", "--audit-webhook-key", "{tmp}/server.key"],
     "--audit-webhook-cert and --audit-webhook-insecure (plain HTTP) exclude each other"),
], ids=["mismatched", "unreadable", "cert-alone", "without-webhook", "with-insecure"])
def test_bad_certificate_options(pki, args, expected):
    _, _, tmp = pki
    (tmp / "other.key").write_bytes(tls_server(("127.0.0.1",))[1].key_pem)
    done = run_suite_env(tmp, {}, *[a.format(tmp=tmp) for a in args])
    line = assert_one_clear_line(done, expected.format(tmp=tmp), max_s=60)
    assert "PRIVATE KEY" not in done.stdout + done.stderr and "PRIVATE KEY" not in line


# ------------------------------------------- a whole run, with the CA the run made and wrote

# The API server's part, played by the attack: it POSTs the audit event the control waits for
# to the receiver over HTTPS, trusting ONLY the CA file the run wrote (and so the receiver's
# IP SAN), with the token in $SENDER_TOKEN.
SENDING_ATTACK = '''
import os
from datetime import datetime, timezone

import requests

from kubeprobe.outcome import Observation

TARGETS = "apiserver"


def run(ctx, target):
    now = datetime.now(timezone.utc).isoformat()
    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
             "auditID": "5e1f", "stage": "ResponseComplete", "verb": "list",
             "requestURI": f"/api/v1/secrets?labelSelector=kubeprobe-nonce%3D{ctx.nonce}",
             "user": {"username": "system:anonymous"}, "responseStatus": {"code": 403},
             "requestReceivedTimestamp": now, "stageTimestamp": now}
    answer = requests.post(os.environ["SENDER_URL"], timeout=5, verify=os.environ["SENDER_CA"],
                           json={"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                                 "items": [event]},
                           headers={"Authorization": f"Bearer {os.environ['SENDER_TOKEN']}"})
    return Observation.succeeded("the throwaway attack went through", posted=answer.status_code)
'''


def sending_run(tmp_path: Path, sender_token: str) -> tuple[subprocess.CompletedProcess, dict]:
    (tmp_path / "attacks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "attacks" / "sends.py").write_text(SENDING_ATTACK)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG.format(
        attack="sends", expected="ALERTED",
        extra="  alert: {source: audit, fields: {user.username: system:anonymous}}\n"))
    port, reports = closed_port(), tmp_path / "reports"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           "SENDER_URL": f"https://127.0.0.1:{port}/", "SENDER_TOKEN": sender_token,
           "SENDER_CA": str(reports / "audit-webhook-ca.pem"),
           "KUBEPROBE_AUDIT_WEBHOOK_TOKEN": TOKEN}
    with StandInApiServer() as api:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", str(REPO / "suites"), "-q", "--reports-dir",
             str(reports), "--kubeconfig", str(api.kubeconfig(tmp_path)), "--catalog",
             str(catalog), "--audit-webhook", f"127.0.0.1:{port}", "--alert-timeout", "5"],
            capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    return done, json.loads((reports / "results.json").read_text())


def test_a_run_makes_its_ca_says_where_and_takes_events_trusting_only_it(tmp_path):
    done, results = sending_run(tmp_path / "right", TOKEN)
    output = done.stdout + done.stderr
    ca_file = tmp_path / "right" / "reports" / "audit-webhook-ca.pem"
    line, = [l for l in output.splitlines() if "certificate made for this run" in l]
    assert f"its CA is {ca_file}" in line and "certificate-authority-data" in line
    assert "(for 127.0.0.1)" in line
    assert ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in output and TOKEN not in output
    row, = results["controls"]
    assert row["verdict"] == "PASS", output[-3000:]
    assert row["endpoints"][0]["observation"]["evidence"]["posted"] == 200
    assert row["endpoints"][0]["alert"]["matched"]["user"]["username"] == "system:anonymous"
    assert results["alert_receivers"]["audit"]["accepted"] == 1
    assert "AuditWebhookReceiver on https://127.0.0.1:" in (
        results["environment"]["Alert sources"])
    # The same, sent with a wrong token: refused over TLS, and the control FAILs.
    done, results = sending_run(tmp_path / "wrong", "not-the-token-0123456789")
    row, = results["controls"]
    assert row["verdict"] == "FAIL", done.stdout + done.stderr
    assert row["endpoints"][0]["observation"]["evidence"]["posted"] == 401
    assert results["alert_receivers"]["audit"]["refused"] == {"401 missing or wrong token": 1}
    # Each run made its own CA.
    assert (tmp_path / "wrong" / "reports" / "audit-webhook-ca.pem").read_bytes() != \
        ca_file.read_bytes()
