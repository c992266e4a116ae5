"""Secrets never reach the reports, proven on the weak lab (where every read goes through).

Canaries are planted where the attacks read: a Secret in kube-system and one in a workload
namespace (`default`), listed anonymously (APISERVER-02/03) and by a rightless
ServiceAccount (SECRETS-01/02) on the weak lab; each Secret also holds a private key, and the
kube-system one carries the `kubectl.kubernetes.io/last-applied-configuration` annotation
that `kubectl apply` leaves (the Secret's data again, in clear JSON); a legacy
ServiceAccount-token Secret (a real token, filled in by the token controller); ConfigMaps
holding a private key; a pod with a credential in a literal environment variable (pod specs
are disclosed by the kubelet's /pods, the anonymous pod list and nodes/proxy). Then the whole suite runs (`pytest suites/ --target lab
--cluster-profile weak`), and results.json, report.html, junit.xml and the terminal output
(stdout + stderr) are searched for every canary, its base64 forms (all three alignments: a
value inside a larger base64 blob is found too) and its distinctive fragments (a cut
excerpt is found too). Also searched for: every token and private key the suite minted
itself (KUBELET-07, SECRETS-*, ETCD-04; written to a file through the self-test hook
$KUBEPROBE_SELFTEST_SECRETS_FILE), every ServiceAccount token the kubelet mounted into a pod
during the run (RUNTIME-06 reads its own; collected from the node's projected volumes, this
machine being the lab's node), the runner's own client key (admin.conf), and the Falco
receiver's token.

Needs root and the lab binaries; brings the weak lab up itself and takes it down (skipped
when a lab is already running). Run it under the lab lock:
    flock /tmp/kubeprobe-lab.lock -c 'python3 -m pytest tests/test_canaries.py -m lab'
"""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from kubeprobe import pki
from kubeprobe.identities import SELFTEST_SECRETS_ENV
from kubeprobe.lab import build, cluster
from kubeprobe.workloads import TRUSTED_PINNED_IMAGE

REPO = Path(__file__).resolve().parent.parent
SAFE = re.compile(r"[A-Za-z0-9+/=_-]{24,}")   # what survives JSON, HTML and XML unescaped
WINDOW = 40

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
needs_build = pytest.mark.skipif(build.read_stamp() is None,
                                 reason="lab binaries not built (run `kubeprobe lab build`)")


# ---------------------------------------------------------------- what to search for

def _windows(text: str) -> list[str]:
    """The whole string, plus WINDOW-character slices at its start, middle and end (a cut
    excerpt of it still matches)."""
    if len(text) <= WINDOW + 8:
        return [text]
    middle = len(text) // 2 - WINDOW // 2
    return [text, text[:WINDOW], text[middle:middle + WINDOW], text[-WINDOW:]]


def _base64_forms(value: bytes) -> list[str]:
    """The value base64-encoded at each of the three byte alignments it can have inside a
    larger blob, without the edge characters that depend on the neighbouring bytes."""
    forms = []
    for shift, skip in ((0, 0), (1, 2), (2, 3)):
        encoded = base64.b64encode(b"\0" * shift + value).decode()
        forms.append(encoded[skip:-4])
        forms.append(base64.urlsafe_b64encode(b"\0" * shift + value).decode()[skip:-4])
    return forms


def needles(secret: str) -> set[str]:
    """Every form of a secret that must not occur in a report."""
    found = set()
    for part in SAFE.findall(secret):            # JWT segments, PEM lines, a random canary
        found.update(_windows(part))
    for form in _base64_forms(secret.encode()):
        if len(form) >= 24:
            found.update(_windows(form))
    return {n for n in found if len(n) >= 24}


def distinctive_needles(secrets_by_name: dict[str, str]) -> dict[str, set[str]]:
    """needles() of each secret less those another secret shares (a PKCS#8 header, a JWT
    header or audience): what is left names the one secret that leaked."""
    reference = pki.key_pem(pki.new_key()).decode()   # a key's common structure, at least
    by_name = {name: needles(value) for name, value in secrets_by_name.items()}
    by_name["(reference key)"] = needles(reference)
    seen: dict[str, int] = {}
    for found in by_name.values():
        for needle in found:
            seen[needle] = seen.get(needle, 0) + 1
    del by_name["(reference key)"]
    return {name: {n for n in found if seen[n] == 1} for name, found in by_name.items()}


# ---------------------------------------------------------------- the canaries

def _canary(label: str) -> str:
    return f"kpcanary{label}{secrets.token_hex(16)}"


def plant(kubeconfig: Path) -> dict[str, str]:
    """Create the canary objects; return {description: secret value}."""
    from kubernetes import client, config as kconfig
    api = client.CoreV1Api(kconfig.new_client_from_config(str(kubeconfig)))
    planted: dict[str, str] = {}
    for namespace in ("kube-system", "default"):
        password = _canary("password")
        key_pem = pki.key_pem(pki.new_key()).decode()
        data = {"password": password, "tls.key": key_pem}
        last_applied = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": "a-kp-canary", "namespace": namespace}, "stringData": data})
        # Named to sort first: inside the part of a list the evidence keeps.
        api.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="a-kp-canary", annotations={
                "kubectl.kubernetes.io/last-applied-configuration": last_applied,
                "kp-canary/note": "planted by tests/test_canaries.py"}),
            string_data=data))
        planted[f"Secret {namespace}/a-kp-canary password"] = password
        planted[f"Secret {namespace}/a-kp-canary tls.key"] = key_pem
        config_key = pki.key_pem(pki.new_key()).decode()
        api.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="a-kp-canary"), data={"id_ec.pem": config_key}))
        planted[f"ConfigMap {namespace}/a-kp-canary id_ec.pem"] = config_key
    # A legacy ServiceAccount-token Secret: the token controller puts a real token in it.
    api.create_namespaced_secret("default", client.V1Secret(
        metadata=client.V1ObjectMeta(name="a-kp-canary-sa-token", annotations={
            "kubernetes.io/service-account.name": "default"}),
        type="kubernetes.io/service-account-token"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        secret = api.read_namespaced_secret("a-kp-canary-sa-token", "default")
        if (secret.data or {}).get("token"):
            planted["Secret default/a-kp-canary-sa-token token"] = base64.b64decode(
                secret.data["token"]).decode()
            break
        time.sleep(1)
    else:
        pytest.fail("the token controller never filled the legacy token Secret")
    # A workload's credential in a literal environment variable (kubelet /pods, the
    # anonymous pod list and nodes/proxy show pod specs).
    env_token = _canary("env")
    api.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name="a-kp-canary"),
        spec=client.V1PodSpec(automount_service_account_token=False, containers=[
            client.V1Container(name="app", image=TRUSTED_PINNED_IMAGE,
                               env=[client.V1EnvVar(name="API_TOKEN", value=env_token)])])))
    planted["Pod default/a-kp-canary env API_TOKEN"] = env_token
    # The runner's own credential: admin.conf's client key.
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    planted["admin.conf client key"] = base64.b64decode(user["client-key-data"]).decode()
    return planted


class MountedTokens:
    """Every ServiceAccount token the kubelet projects into a pod during the run (this
    machine is the lab's node), read every half second."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "MountedTokens":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        pattern = "pods/*/volumes/kubernetes.io~projected/*/token"
        while not self._stop.is_set():
            for path in cluster.KUBELET_DIR.glob(pattern):
                try:
                    self.tokens.add(path.read_text().strip())
                except OSError:
                    pass  # the pod went away meanwhile
            self._stop.wait(0.5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _agent_images() -> list[Path]:
    """What the suite gives the lab it starts (kubeprobe.plugin._agent_image)."""
    try:
        from kubeprobe.agent import build_agent_image
        return [build_agent_image()]
    except (OSError, RuntimeError):
        return []


# ---------------------------------------------------------------- the test

@pytest.mark.lab
@needs_root
@needs_build
def test_no_secret_reaches_the_reports(tmp_path):
    if cluster.status() is not None:
        pytest.skip("a lab is already running; this test brings up (and down) its own")
    reports = tmp_path / "reports"
    minted = tmp_path / "minted.jsonl"
    receiver_token = _canary("receiver")
    state = cluster.up("weak", extra_images=_agent_images())
    try:
        planted = plant(state.kubeconfig)
        with MountedTokens() as mounted:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", str(REPO / "suites"), "--target", "lab",
                 "--cluster-profile", "weak", "--reports-dir", str(reports), "-p", "no:randomly",
                 "--falco-receiver", f"127.0.0.1:{free_port()}", "--alert-timeout", "1"],
                capture_output=True, text=True, timeout=1500, cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), SELFTEST_SECRETS_ENV: str(minted),
                     "KUBEPROBE_FALCO_TOKEN": receiver_token})
    finally:
        cluster.down()
    terminal = done.stdout + "\n" + done.stderr
    results = json.loads((reports / "results.json").read_text())
    rows = {row["id"]: row for row in results["controls"]}

    # The attacks did read where the canaries are (else this test would prove nothing).
    assert rows["APISERVER-02"]["verdict"] == "FAIL", terminal[-3000:]
    assert "default/a-kp-canary" in json.dumps(rows["APISERVER-02"]), \
        "the anonymous Secret list did not reach the canary"
    assert "kube-system/a-kp-canary" in json.dumps(rows["SECRETS-02"]), \
        "the ServiceAccount's kube-system Secret list did not reach the canary"
    assert rows["RUNTIME-06"]["observed"] == "SUCCEEDED", rows["RUNTIME-06"]["reason"]

    secrets_found: dict[str, str] = dict(planted)
    secrets_found["Falco receiver token"] = receiver_token
    for number, line in enumerate(minted.read_text().splitlines()):
        record = json.loads(line)
        secrets_found[f"minted {record['kind']} #{number}"] = record["value"]
    for number, token in enumerate(sorted(mounted.tokens)):
        secrets_found[f"mounted pod token #{number}"] = token
    assert any(k.startswith("minted ServiceAccount token") for k in secrets_found), \
        "the suite minted no token (KUBELET-07, SECRETS-*): the hook saw nothing"
    assert mounted.tokens, "no projected token was seen on the node during the run"

    haystacks = {name: (reports / name).read_text() for name in
                 ("results.json", "report.html", "junit.xml")}
    haystacks["terminal output"] = terminal
    leaks = []
    searched = distinctive_needles(secrets_found)
    assert all(searched.values()), [k for k, v in searched.items() if not v]
    for what, found in searched.items():
        for needle in found:
            for where, text in haystacks.items():
                at = text.find(needle)
                if at >= 0:
                    leaks.append(f"{what} in {where} at {at}: ...{text[max(0, at - 80):at]}"
                                 f"[{needle[:12]}...]")
    assert not leaks, f"{len(leaks)} leak(s):\n" + "\n".join(sorted(set(leaks))[:30])


# ---------------------------------------------------------------- the pieces, without a lab

def test_needles_find_a_secret_inside_a_larger_base64_blob_and_in_a_cut_excerpt():
    secret = _canary("unit")
    for prefix in (b"", b"x", b"xy", b"xyz"):
        blob = base64.b64encode(prefix + b'{"password":"' + secret.encode() + b'"}').decode()
        assert any(n in blob for n in needles(secret)), prefix
    assert any(n in secret[:50] for n in needles(secret))      # cut after 50 characters
    key = pki.key_pem(pki.new_key()).decode()
    other = pki.key_pem(pki.new_key()).decode()
    searched = distinctive_needles({"key": key, "other": other})
    assert searched["key"] and not any(n in other for n in searched["key"])


def test_evidence_never_carries_object_copies_env_values_or_contents():
    """What the first canary run found: a Secret's last-applied-configuration annotation (its
    data again, in clear) and a pod's literal environment values went into the evidence."""
    from kubeprobe.context import evidence_of
    from kubeprobe.net import Exchange
    secret = _canary("unit")
    applied = json.dumps({"kind": "Secret", "stringData": {"password": secret}})
    items = [{"metadata": {"name": "s", "namespace": "default", "annotations": {
                  "kubectl.kubernetes.io/last-applied-configuration": applied, "team": "a"}},
              "data": {"password": base64.b64encode(secret.encode()).decode()},
              "binaryData": {"k": base64.b64encode(secret.encode()).decode()}},
             {"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [
                 {"name": "app", "env": [{"name": "API_TOKEN", "value": secret},
                                         {"name": "FROM_SECRET", "valueFrom": {
                                             "secretKeyRef": {"name": "s", "key": "k"}}}]}]}}]
    exchange = Exchange("runner", "x", "t", 1.0, http_status=200,
                        body=json.dumps({"kind": "List", "items": items}))
    record = evidence_of(exchange)["body"]
    assert not any(n in record for n in needles(secret)), record
    assert "API_TOKEN" in record and "secretKeyRef" in record and '"team": "a"' in record
