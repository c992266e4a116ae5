"""The alert receiver cannot be fooled: real HTTP POSTs to the real FalcoHttpReceiver on
loopback. Only a POST carrying the shared token (Authorization: Bearer, or ?token= for Falco's
http_output, which cannot set headers) is ingested; a missing or wrong token, a body over the
cap, no Content-Length, or a body that is not a Falco alert is refused and not ingested. A
whole run shows that an alert forged without the token cannot PASS a control."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from kubeprobe.alerts import MAX_BODY, FalcoHttpReceiver, parse_matcher
from tests.standin_apiserver import StandInApiServer
from tests.test_alerts import RULE, falco_json
from tests.test_bad_input import CATALOG, assert_one_clear_line, closed_port, run_suite

REPO = Path(__file__).resolve().parent.parent
TOKEN = "selftest-receiver-token-0123456789"
MATCHER = {"source": "falco", "rule": RULE}


@pytest.fixture
def receiver():
    started = FalcoHttpReceiver("127.0.0.1", 0, token=TOKEN)
    started.start()
    yield started
    started.stop()


def url(receiver: FalcoHttpReceiver, query: str = "") -> str:
    return f"http://127.0.0.1:{receiver.port}/{query}"


def alert(nonce: str) -> dict:
    return falco_json(RULE, f"etcdctl kubeprobe-{nonce}", when=datetime.now(timezone.utc))


def ingested(receiver: FalcoHttpReceiver, nonce: str) -> bool:
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    return receiver.wait_for(parse_matcher(MATCHER, nonce=nonce), since, 0.2).matched is not None


def raw_post(receiver: FalcoHttpReceiver, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """A hand-written request: the status line of the answer, and what arrived."""
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_right_token_in_the_header_or_the_url_is_ingested(receiver):
    answer = requests.post(url(receiver), json=alert("hdr1"), timeout=5,
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and ingested(receiver, "hdr1")
    # Falco's http_output sets no headers: the token rides in its url.
    answer = requests.post(url(receiver, f"?token={TOKEN}"), json=alert("url1"), timeout=5)
    assert answer.status_code == 200 and ingested(receiver, "url1")
    assert receiver.status()["accepted"] == 2 and not receiver.status()["refused"]


@pytest.mark.parametrize("headers, query", [
    ({}, ""),
    ({"Authorization": "Bearer not-the-token-0123456789"}, ""),
    ({"Authorization": f"Bearer {TOKEN}x"}, ""),
    ({"Authorization": f"Bearer {TOKEN[:-1]}"}, ""),
    ({"Authorization": f"Basic {TOKEN}"}, ""),
    ({"Authorization": TOKEN}, ""),
    ({}, "?token=not-the-token-0123456789"),
    ({}, f"?tok={TOKEN}"),
], ids=["none", "wrong", "longer", "shorter", "basic", "no-scheme", "wrong-query", "other-key"])
def test_missing_or_wrong_token_is_refused_401_and_not_ingested(receiver, headers, query):
    answer = requests.post(url(receiver, query), json=alert("forged"), headers=headers,
                           timeout=5)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert not ingested(receiver, "forged")
    assert receiver.status()["refused"] == {"401 missing or wrong token": 1}


def test_wrong_token_is_refused_before_the_body_is_read(receiver):
    # The declared body never arrives: an unauthenticated sender gets its 401 at once.
    status, _ = raw_post(receiver, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n")
    assert status == 401


def test_body_over_the_cap_is_refused_413_unread_and_not_ingested(receiver):
    # Only the headers are sent: the receiver answers from Content-Length alone.
    status, answer = raw_post(receiver, f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                        f"{TOKEN}\r\nContent-Length: {MAX_BODY + 1}\r\n")
    assert status == 413 and b"body over 1048576 bytes" in answer
    # A whole oversized body with the nonce in it is not ingested either.
    big = alert("big1")
    big["output_fields"]["padding"] = "x" * MAX_BODY
    try:
        answer = requests.post(url(receiver), json=big, timeout=10,
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 413
    except requests.ConnectionError:
        pass  # the receiver closed while the unread body was still being sent: also refused
    assert not ingested(receiver, "big1")
    # Exactly at the cap is still read (and judged on its content).
    body = json.dumps(alert("fits1")).encode()
    body += b" " * (MAX_BODY - len(body))
    answer = requests.post(url(receiver), data=body, timeout=10,
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and ingested(receiver, "fits1")


@pytest.mark.parametrize("body", [
    b"not json",
    b'{"rule": "kubeprobe: unexpected process in etcd", "output": "kubeprobe-bad1"',
    b"[1, 2, 3]",
    b'"kubeprobe-bad1"',
    json.dumps({"rule": RULE, "output": "kubeprobe-bad1"}).encode(),            # no time
    json.dumps({**alert("bad1"), "time": "yesterday"}).encode(),
    b"\xff\xfe kubeprobe-bad1",
], ids=["text", "cut", "array", "string", "no-time", "bad-time", "not-utf8"])
def test_malformed_body_is_refused_400_and_not_ingested(receiver, body):
    answer = requests.post(url(receiver), data=body, timeout=5,
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 400
    assert not ingested(receiver, "bad1")
    assert sum(receiver.status()["refused"].values()) == 1


def test_no_content_length_is_refused_411(receiver):
    status, _ = raw_post(receiver, f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                   f"{TOKEN}\r\nTransfer-Encoding: chunked\r\n",
                         b"5\r\nhello\r\n0\r\n\r\n")
    assert status == 411
    status, _ = raw_post(receiver, f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                   f"{TOKEN}\r\nConnection: close\r\n")
    assert status == 411


def test_binds_exactly_the_address_given():
    receiver = FalcoHttpReceiver("127.0.0.1", 0, token=TOKEN)
    receiver.start()
    try:
        assert receiver._server.socket.getsockname()[0] == "127.0.0.1"
    finally:
        receiver.stop()
    if socket.has_ipv6:
        six = FalcoHttpReceiver("::1", 0, token=TOKEN)
        try:
            six.start()
        except OSError:
            return  # no IPv6 loopback on this machine
        try:
            assert six._server.socket.getsockname()[0] == "::1"
            answer = requests.post(f"http://[::1]:{six.port}/?token={TOKEN}",
                                   json=alert("six1"), timeout=5)
            assert answer.status_code == 200 and ingested(six, "six1")
        finally:
            six.stop()


def test_a_token_is_made_when_none_is_given_and_insecure_is_explicit():
    made = FalcoHttpReceiver()
    assert made.token_generated and len(made.token) >= 40
    assert made.token != FalcoHttpReceiver().token
    insecure = FalcoHttpReceiver(insecure=True)
    assert insecure.token is None and "INSECURE" in insecure.describe()
    insecure.start()
    try:
        assert requests.post(url(insecure), json=alert("open1"), timeout=5).status_code == 200
        assert ingested(insecure, "open1")
    finally:
        insecure.stop()
    with pytest.raises(ValueError, match="16-256 characters"):
        FalcoHttpReceiver(token="short")
    with pytest.raises(ValueError, match="exclude"):
        FalcoHttpReceiver(token=TOKEN, insecure=True)
    assert TOKEN not in json.dumps(FalcoHttpReceiver(token=TOKEN).status())


# ------------------------------------------------- a whole run: a forged alert cannot PASS

# Succeeds, and meanwhile "someone" who learnt the attack's nonce forges the very alert the
# control waits for and POSTs it to the receiver with the token in $FORGER_TOKEN (none: no
# token at all). The receiver's answer goes into the evidence.
FORGING_ATTACK = '''
import os
from datetime import datetime, timezone

import requests

from kubeprobe.outcome import Observation

TARGETS = "apiserver"


def run(ctx, target):
    token = os.environ.get("FORGER_TOKEN")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    forged = {"time": now, "rule": "kubeprobe: forged rule", "priority": "Critical",
              "source": "syscall", "output": f"forged kubeprobe-{ctx.nonce}",
              "output_fields": {"proc.cmdline": f"kubeprobe-{ctx.nonce}"}}
    answer = requests.post(os.environ["FORGER_URL"], json=forged, timeout=5,
                           headers={"Authorization": f"Bearer {token}"} if token else {})
    return Observation.succeeded("the throwaway attack went through",
                                 forged_post=answer.status_code)
'''


def forging_run(tmp_path: Path, forger_token: str | None, *args: str,
                env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    (tmp_path / "attacks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "attacks" / "forges.py").write_text(FORGING_ATTACK)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG.format(
        attack="forges", expected="ALERTED",
        extra="  alert: {source: falco, rule: 'kubeprobe: forged rule'}\n"))
    port = closed_port()
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
                   "FORGER_URL": f"http://127.0.0.1:{port}/", **(env or {})}
    if forger_token:
        environment["FORGER_TOKEN"] = forger_token
    with StandInApiServer() as api:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", str(REPO / "suites"), "-q", "--reports-dir",
             str(tmp_path / "reports"), "--kubeconfig", str(api.kubeconfig(tmp_path)),
             "--catalog", str(catalog), "--falco-receiver", f"127.0.0.1:{port}",
             "--alert-timeout", "2", *args],
            capture_output=True, text=True, timeout=60, cwd=REPO, env=environment)
    return done, json.loads((tmp_path / "reports" / "results.json").read_text())


def test_an_alert_forged_without_the_token_cannot_pass_a_control(tmp_path):
    done, results = forging_run(tmp_path / "forged", "not-the-token-0123456789",
                                "--falco-receiver-token", TOKEN)
    row, = results["controls"]
    assert row["verdict"] == "FAIL", done.stdout + done.stderr
    assert row["endpoints"][0]["observation"]["evidence"]["forged_post"] == 401
    assert row["endpoints"][0]["alert"]["matched"] is None
    assert results["alert_receivers"]["falco"]["refused"] == {"401 missing or wrong token": 1}
    assert "the falco receiver refused 1 POST(s), none ingested" in done.stdout
    assert TOKEN not in done.stdout + done.stderr  # a token that was given is never shown
    for report in ("results.json", "report.html", "junit.xml"):
        assert TOKEN not in (tmp_path / "forged" / "reports" / report).read_text()
    # The same run with the right token (from $KUBEPROBE_FALCO_TOKEN): the alert counts, so
    # the refusal above is the token's doing.
    done, results = forging_run(tmp_path / "right", TOKEN,
                                env={"KUBEPROBE_FALCO_TOKEN": TOKEN})
    row, = results["controls"]
    assert row["verdict"] == "PASS", done.stdout + done.stderr
    assert results["alert_receivers"]["falco"]["accepted"] == 1
    assert "shared token required" in results["environment"]["Alert sources"]


def test_no_token_given_makes_one_and_says_how_to_configure_falco(tmp_path):
    done, results = forging_run(tmp_path, None)
    line, = [l for l in done.stdout.splitlines() if "this run's token is" in l]
    token = line.split("this run's token is ")[1].split(":")[0]
    assert len(token) >= 40 and f"?token={token}" in line
    assert f"WEBHOOK_CUSTOMHEADERS='Authorization:Bearer {token}'" in line
    row, = results["controls"]
    assert row["verdict"] == "FAIL"  # the forger had no token
    assert row["endpoints"][0]["observation"]["evidence"]["forged_post"] == 401


def test_insecure_is_explicit_and_said_in_the_report(tmp_path):
    done, results = forging_run(tmp_path, None, "--falco-receiver-insecure")
    assert "WITHOUT a token (--falco-receiver-insecure)" in done.stdout
    assert "INSECURE" in results["environment"]["Alert sources"]
    assert "INSECURE" in (tmp_path / "reports" / "report.html").read_text()
    row, = results["controls"]
    assert row["verdict"] == "PASS"  # which is exactly why it must be said


@pytest.mark.parametrize("args, env, expected", [
    (["--falco-receiver", ":2801"], {}, "--falco-receiver ':2801': name the address to bind"),
    (["--falco-receiver", "127.0.0.1:2801", "--falco-receiver-token", "short-secret"], {},
     "the Falco receiver's token (--falco-receiver-token) must be 16-256 characters"),
    (["--falco-receiver", "127.0.0.1:2801"], {"KUBEPROBE_FALCO_TOKEN": "has:colon,and-comma"},
     "the Falco receiver's token ($KUBEPROBE_FALCO_TOKEN) must be 16-256 characters"),
    (["--falco-receiver", "127.0.0.1:2801", "--falco-receiver-insecure",
      "--falco-receiver-token", TOKEN], {}, "--falco-receiver-insecure and a token"),
    (["--falco-receiver-token", TOKEN], {}, "--falco-receiver-token without --falco-receiver"),
    (["--falco-receiver-insecure"], {}, "--falco-receiver-insecure without --falco-receiver"),
    (["--audit-webhook", ":2802"], {}, "--audit-webhook ':2802': name the address to bind"),
    (["--audit-webhook", "127.0.0.1:2802"], {"KUBEPROBE_AUDIT_WEBHOOK_TOKEN": "short-secret"},
     "the audit webhook receiver's token ($KUBEPROBE_AUDIT_WEBHOOK_TOKEN) must be 16-256"),
    (["--audit-webhook-token", TOKEN], {}, "--audit-webhook-token without --audit-webhook"),
    (["--audit-webhook", "127.0.0.1:2802", "--audit-webhook-insecure",
      "--audit-webhook-token", TOKEN], {}, "--audit-webhook-insecure and a token"),
    (["--audit-webhook", "127.0.0.1:2802", "--audit-log", "/var/log/audit.log"], {},
     "--audit-log and --audit-webhook: give one audit source"),
], ids=["no-host", "short", "bad-env", "both", "token-alone", "insecure-alone",
        "webhook-no-host", "webhook-bad-env", "webhook-token-alone", "webhook-both",
        "webhook-and-log"])
def test_bad_receiver_options(tmp_path, monkeypatch, args, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    done = run_suite_env(tmp_path, env, *args)
    line = assert_one_clear_line(done, expected, max_s=20)
    assert "short-secret" not in line and "has:colon" not in line  # never echoed


def run_suite_env(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    if not env:
        return run_suite(tmp_path, *args)
    import time
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "suites"), "-q",
                           "--reports-dir", str(tmp_path / "reports"), *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "PYTHONPATH": str(REPO), **env})
    done.elapsed = time.monotonic() - started
    return done
