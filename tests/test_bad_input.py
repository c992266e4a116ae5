"""Bad input gets one clear line and exit code 2: never a hang, never a traceback."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}
users:
- name: u
  user: {{token: not-a-real-token}}
contexts:
- name: staging
  context: {{cluster: c, user: u}}
current-context: staging
"""

# A throwaway catalog for the tests below: one control whose attack module lives next to it
# (attacks_dir), so a test decides exactly what the attack and its cleanup do.
CATALOG = """profiles: {{default: prevention}}
attacks_dir: attacks
controls:
- id: STANDIN-01
  title: a throwaway control of the exit-code self-tests
  component: kube-apiserver
  guidance: none; this control only exists in a self-test
  attack: {attack}
  identity: the runner
  vantage: runner
  expected: {{default: {expected}}}
  blocked_by: [http_401]
  mappings: {{cis: [], mitre: [T1613]}}
  remediation: none
{alert}"""


def run_suite(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "suites"), "-q",
                           "--reports-dir", str(tmp_path / "reports"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "PYTHONPATH": str(REPO)})
    done.elapsed = time.monotonic() - started
    return done


def kubeconfig(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(port=port))
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_clear_line(done: subprocess.CompletedProcess, expected: str,
                          code: int = 2, max_s: float = 30) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    lines = [line for line in output.splitlines() if "kubeprobe:" in line]
    assert len(lines) == 1 and expected in lines[0], output
    assert done.elapsed < max_s, f"took {done.elapsed:.1f}s"
    return lines[0]


def test_no_cluster(tmp_path):
    done = run_suite(tmp_path, "--kubeconfig", str(kubeconfig(tmp_path, closed_port())))
    assert_one_clear_line(done, "no cluster")


def test_filtered_api_server_does_not_hang(tmp_path):
    with socket.socket() as tarpit:  # accepts into the backlog, never answers
        tarpit.bind(("127.0.0.1", 0))
        tarpit.listen(8)
        done = run_suite(tmp_path, "--kubeconfig",
                         str(kubeconfig(tmp_path, tarpit.getsockname()[1])),
                         "--connect-timeout", "1")
    assert_one_clear_line(done, "did not answer", max_s=15)


def test_blackholed_api_server_ends_within_the_connect_timeout(tmp_path):
    # A listener whose accept queue is full drops every further SYN, exactly like a filtered
    # (blackholed) address: the client's connect can only time out.
    with socket.socket() as blackhole, socket.socket() as queued:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        queued.connect(blackhole.getsockname())   # fills the queue
        with socket.socket() as probe:           # check: a new SYN really goes unanswered
            probe.settimeout(0.3)
            try:
                probe.connect(blackhole.getsockname())
                pytest.skip("this kernel answers SYNs beyond a full accept queue")
            except TimeoutError:
                pass
        baseline = run_suite(tmp_path, "--controls", "NOPE-*")  # start-up cost, no network
        done = run_suite(tmp_path, "--kubeconfig",
                         str(kubeconfig(tmp_path, blackhole.getsockname()[1])),
                         "--connect-timeout", "2")
    assert_one_clear_line(done, "did not answer (ConnectTimeoutError)")
    # One connect deadline (no client retries), plus what start-up costs anyway.
    assert done.elapsed < baseline.elapsed + 2 + 1.5, (done.elapsed, baseline.elapsed)


def test_missing_kubeconfig(tmp_path):
    done = run_suite(tmp_path, "--kubeconfig", str(tmp_path / "nope"))
    assert_one_clear_line(done, "does not exist")


def test_garbage_kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("this: [is not a kubeconfig\n")
    done = run_suite(tmp_path, "--kubeconfig", str(path))
    assert_one_clear_line(done, "is not valid YAML (line 2)")


def test_kubeconfig_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("just some text, no kubeconfig\n")  # valid YAML: a string
    done = run_suite(tmp_path, "--kubeconfig", str(path))
    line = assert_one_clear_line(done, "is not a kubeconfig: expected a YAML mapping")
    assert "item assignment" not in line


def test_unknown_context(tmp_path):
    done = run_suite(tmp_path, "--kubeconfig", str(kubeconfig(tmp_path, closed_port())),
                     "--context", "prod")
    assert_one_clear_line(done, "context 'prod' is not in")


def test_kind_without_kind_or_docker(tmp_path):
    done = run_suite(tmp_path, "--target", "kind")
    assert_one_clear_line(done, "--target kind needs the kind CLI and a running Docker engine")


def test_malformed_catalog(tmp_path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text("profiles: {default: x}\ncontrols:\n- id: ETCD-01\n")
    done = run_suite(tmp_path, "--catalog", str(bad))
    assert_one_clear_line(done, "malformed catalog")


def test_unknown_profile(tmp_path):
    done = run_suite(tmp_path, "--profile", "paranoid")
    assert_one_clear_line(done, "--profile 'paranoid' is not in the catalog")


def test_controls_selection_matching_nothing(tmp_path):
    done = run_suite(tmp_path, "--controls", "NOPE-*")
    assert_one_clear_line(done, "matches no control")


@pytest.mark.parametrize("args, expected", [
    (["--connect-timeout", "-1"], "--connect-timeout '-1': must be a number of seconds greater than 0"),
    (["--connect-timeout", "soon"], "--connect-timeout 'soon': must be a number of seconds"),
    (["--read-timeout", "0"], "--read-timeout '0': must be a number of seconds greater than 0"),
    (["--alert-timeout", "-5"], "--alert-timeout '-5': must be a number of seconds greater than 0"),
    (["--alert-timeout", "nan"], "--alert-timeout 'nan': must be a number of seconds"),
    (["--target", "nosuch"], "--target 'nosuch': must be one of auto, existing, kind, lab"),
    (["--cluster-profile", "paranoid"], "--cluster-profile 'paranoid': must be one of hardened, weak"),
    (["--falco-receiver", "2801"], "--falco-receiver '2801': expected HOST:PORT"),
    (["--falco-receiver", "0.0.0.0:70000"], "--falco-receiver '0.0.0.0:70000': expected HOST:PORT"),
    (["--falco-receiver", "host:port"], "--falco-receiver 'host:port': expected HOST:PORT"),
    (["--falco-namespace", "Falco_NS"], "--falco-namespace 'Falco_NS': not a namespace name"),
    (["--run-id", "Nightly_1"], "--run-id 'Nightly_1': must be DNS-safe"),
    (["--run-id", "a" * 27], "at most 26 characters"),
    (["--controls", "ETCD-99,NOPE-*"], "--controls 'ETCD-99,NOPE-*' matches no control"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("-") else None)
def test_bad_option(tmp_path, args, expected):
    """kubeprobe's own options are kubeprobe's to refuse: one line, exit 2 (never pytest's
    usage error 4, a validation traceback per control, or an attempt to reach a cluster)."""
    done = run_suite(tmp_path, *args)
    assert_one_clear_line(done, expected, max_s=20)
    assert not (tmp_path / "reports" / "report.html").exists()  # refused before the run


def test_reports_dir_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_suite(tmp_path, "--reports-dir", str(blocker / "reports"))
    assert_one_clear_line(done, f"--reports-dir {blocker / 'reports'}: cannot write there "
                                "(Not a directory)", max_s=20)


def test_missing_catalog(tmp_path):
    done = run_suite(tmp_path, "--catalog", str(tmp_path / "nope.yaml"))
    assert_one_clear_line(done, "cannot read catalog", max_s=20)


def test_catalog_whose_attack_does_not_load(tmp_path):
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "broken.py").write_text("TARGETS = 'apiserver'\ndef run(ctx, target:\n")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG.format(attack="broken", expected="BLOCKED", alert=""))
    done = run_suite(tmp_path, "--catalog", str(catalog))
    assert_one_clear_line(done, "control STANDIN-01: attack module broken does not load: "
                                "SyntaxError", max_s=20)
