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
