"""Bad input gets one clear line and exit code 2: never a hang, never a traceback.

The same for what can go wrong once a run is going: a cleanup that fails (exit 2 at the end,
the step named on the row), the API server going away mid-run (exit 2 at once, remaining
cleanups attempted with short deadlines), an alert source that cannot start (one line, the
run goes on). Those runs attack tests/standin_apiserver.py, a TLS stand-in that answers like
an API server and can be told to stop answering at a chosen request.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubeprobe.catalog import load_catalog
from kubeprobe.kube import Kube
from kubeprobe.outcome import Verdict
from kubeprobe.suite import Suite, SuiteAbort
from kubeprobe.targets import Target
from tests.standin_apiserver import StandInApiServer


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
{extra}"""


def run_suite(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
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
                          code: int = 2, max_s: float = 90) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    # "kubeprobe: <message>" (a captured log record reads "kubeprobe:context.py:147 ...")
    lines = [line for line in output.splitlines() if "kubeprobe: " in line]
    assert len(lines) == 1 and expected in lines[0], output
    # A hang detector, not a speed test: the bounds are several times what a run takes on an
    # idle machine (a few seconds), so a loaded CI machine does not make them flake.
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
    assert_one_clear_line(done, "did not answer", max_s=45)


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
                         "--connect-timeout", "5")
    assert_one_clear_line(done, "did not answer (ConnectTimeoutError)")
    # One connect deadline (5 s), no client retries (urllib3's default would make 4 attempts,
    # 20 s), plus what start-up costs anyway; the margin absorbs a loaded machine's noise.
    assert done.elapsed < baseline.elapsed + 5 + 8, (done.elapsed, baseline.elapsed)


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
    assert_one_clear_line(done, "--target kind needs the kind CLI and a container engine: the kind CLI is not installed")


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
    (["--cluster-profile", "paranoid"], "--cluster-profile 'paranoid': must be one of decoy, hardened, weak"),
    (["--falco-receiver", "2801"], "--falco-receiver '2801': expected HOST:PORT"),
    (["--falco-receiver", "0.0.0.0:70000"], "--falco-receiver '0.0.0.0:70000': expected HOST:PORT"),
    (["--falco-receiver", "host:port"], "--falco-receiver 'host:port': expected HOST:PORT"),
    (["--falco-namespace", "Falco_NS"], "--falco-namespace 'Falco_NS': not a namespace name"),
    (["--registry-exempt-namespaces", "cosign-system,Bad_NS"],
     "--registry-exempt-namespaces 'cosign-system,Bad_NS': 'Bad_NS' is not a namespace name"),
    (["--run-id", "Nightly_1"], "--run-id 'Nightly_1': must be DNS-safe"),
    (["--run-id", "a" * 27], "at most 26 characters"),
    (["--controls", "ETCD-99,NOPE-*"], "--controls 'ETCD-99,NOPE-*' matches no control"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("-") else None)
def test_bad_option(tmp_path, args, expected):
    """kubeprobe's own options are kubeprobe's to refuse: one line, exit 2 (never pytest's
    usage error 4, a validation traceback per control, or an attempt to reach a cluster)."""
    done = run_suite(tmp_path, *args)
    assert_one_clear_line(done, expected, max_s=60)
    assert not (tmp_path / "reports" / "report.html").exists()  # refused before the run


def test_reports_dir_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_suite(tmp_path, "--reports-dir", str(blocker / "reports"))
    assert_one_clear_line(done, f"--reports-dir {blocker / 'reports'}: cannot write there "
                                "(Not a directory)", max_s=60)


def test_missing_catalog(tmp_path):
    done = run_suite(tmp_path, "--catalog", str(tmp_path / "nope.yaml"))
    assert_one_clear_line(done, "cannot read catalog", max_s=60)


def test_catalog_whose_attack_does_not_load(tmp_path):
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "broken.py").write_text("TARGETS = 'apiserver'\ndef run(ctx, target:\n")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG.format(attack="broken", expected="BLOCKED", extra=""))
    done = run_suite(tmp_path, "--catalog", str(catalog))
    assert_one_clear_line(done, "control STANDIN-01: attack module broken does not load: "
                                "SyntaxError", max_s=60)


# ---------------------------------------------------------------- once the run is going

ATTACKS = {
    # Goes through; its one cleanup raises (the stand-in "kept" the object).
    "cleanup_raises": '''
from kubeprobe.outcome import Authority, Observation

TARGETS = "apiserver"


def _remove(name):
    raise RuntimeError(f"the stand-in kept {name}")


def run(ctx, target, outcome="succeeded"):
    ctx.defer("delete configmap default/kp-standin", _remove, "kp-standin")
    if outcome == "blocked":
        return Observation.blocked(Authority.HTTP_401, "the stand-in said 401")
    return Observation.succeeded("the throwaway attack went through")
''',
    # Creates two ConfigMaps on the stand-in, deletion registered first.
    "creates_configmaps": '''
from kubernetes import client
from kubeprobe.outcome import Observation

TARGETS = "apiserver"


def run(ctx, target):
    core = ctx.kube.core
    for name in ("kp-standin-a", "kp-standin-b"):
        ctx.defer(f"delete configmap default/{name}", core.delete_namespaced_config_map, name,
                  "default", _request_timeout=ctx.kube.timeout)
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name,
                                                                       labels=ctx.labels)),
            _request_timeout=ctx.kube.timeout)
    return Observation.succeeded("created two ConfigMaps on the stand-in")
''',
    "succeeds": '''
from kubeprobe.outcome import Observation

TARGETS = "apiserver"


def run(ctx, target):
    return Observation.succeeded("the throwaway attack went through")
''',
}


def throwaway_catalog(tmp_path: Path, attack: str, expected: str = "BLOCKED",
                      extra: str = "") -> Path:
    (tmp_path / "attacks").mkdir(exist_ok=True)
    (tmp_path / "attacks" / f"{attack}.py").write_text(ATTACKS[attack])
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG.format(attack=attack, expected=expected, extra=extra))
    return path


def results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "reports" / "results.json").read_text())


def test_failed_cleanup_keeps_fail_names_the_step_and_exits_2(tmp_path):
    catalog = throwaway_catalog(tmp_path, "cleanup_raises")
    with StandInApiServer() as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog))
    line = assert_one_clear_line(done, "cleanup failed, objects may be left in the cluster: "
                                       "STANDIN-01: delete configmap default/kp-standin: "
                                       "RuntimeError: the stand-in kept kp-standin")
    assert line.startswith("kubeprobe:")
    row, = results(tmp_path)["controls"]
    assert row["verdict"] == "FAIL"  # the finding stands; the cleanup is named beside it
    assert row["reason"].endswith("; cleanup failed: delete configmap default/kp-standin: "
                                  "RuntimeError: the stand-in kept kp-standin")
    assert results(tmp_path)["exit_status"] == 2


def test_failed_cleanup_turns_a_pass_into_error_on_the_row(tmp_path):
    """Suite.run_control directly: a PASS whose cleanup failed is an ERROR naming the step;
    a FAIL stays FAIL with the step in its reason; both are counted for exit 2."""
    with StandInApiServer() as api:
        for outcome, verdict in (("blocked", Verdict.ERROR), ("succeeded", Verdict.FAIL)):
            catalog = load_catalog(throwaway_catalog(
                tmp_path, "cleanup_raises", extra=f"  params: {{outcome: {outcome}}}\n"))
            suite = standin_suite(api, catalog, tmp_path)
            result = suite.run_control(catalog.get("STANDIN-01"))
            assert result.verdict is verdict, result.reason
            assert "cleanup failed: delete configmap default/kp-standin: RuntimeError: " \
                   "the stand-in kept kp-standin" in result.reason
            assert suite.cleanup_failures == [
                "STANDIN-01: delete configmap default/kp-standin: RuntimeError: "
                "the stand-in kept kp-standin"]


def test_api_server_gone_during_discovery(tmp_path):
    catalog = throwaway_catalog(tmp_path, "succeeds")
    # (not the run's look for leftovers at its start: a label-selected list of every kind)
    with StandInApiServer(stop_on=lambda method, path, _: path.startswith("/api/v1/nodes")
                          and "labelSelector=kubeprobe.io" not in path) as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog))
        line = assert_one_clear_line(done, f"API server {api.url} stopped answering mid-run "
                                           "(during STANDIN-01) while discovering endpoints")
    assert "cleanup" not in line  # nothing had been created
    assert results(tmp_path)["exit_status"] == 2


def test_api_server_gone_during_setup(tmp_path):
    """Before any control: while the alert sources are looked for (the Falco pods)."""
    catalog = throwaway_catalog(tmp_path, "succeeds")
    with StandInApiServer(stop_on=lambda method, path, _: "/namespaces/falco/" in path) as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog))
        assert_one_clear_line(done, f"API server {api.url} stopped answering mid-run (during "
                                    "setup: starting the alert sources)")
    assert results(tmp_path)["controls"] == []


def test_api_server_gone_during_a_probe_of_the_api_server(tmp_path):
    """APISERVER-01 for real: its anonymous request is where the API server goes away. A
    connection that is cut or refused proves nothing about anonymous access: exit 2, no row
    that says FAIL or PASS."""
    anonymous_list = lambda method, path, headers: ("Authorization" not in headers  # noqa: E731
                                                    and path.startswith("/api/v1/pods")
                                                    and "labelSelector=kubeprobe.io" not in path)
    with StandInApiServer(stop_on=anonymous_list) as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--controls", "APISERVER-01")
        assert_one_clear_line(done, f"API server {api.url} stopped answering mid-run (during "
                                    f"APISERVER-01) while attacking apiserver (127.0.0.1:"
                                    f"{api.port})")
    row, = results(tmp_path)["controls"]
    assert row["verdict"] == "ERROR" and "stopped answering" in row["reason"]


def test_api_server_gone_during_an_exec(tmp_path):
    """RUNTIME-01 for real (kubeprobe/podexec.py): the API server goes away at the exec."""
    with StandInApiServer(stop_on=lambda method, path, _: "/exec" in path, etcd_pod=True) as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--controls", "RUNTIME-01", "--intrusive")
        assert_one_clear_line(done, f"API server {api.url} stopped answering mid-run "
                                    f"(during RUNTIME-01) while attacking apiserver")
        assert any("/exec" in path for _, path in api.requests)


def test_api_server_gone_during_a_cleanup(tmp_path):
    catalog = throwaway_catalog(tmp_path, "creates_configmaps")
    with StandInApiServer(stop_on=lambda method, path, _: method == "DELETE") as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog))
        assert_one_clear_line(done, f"API server {api.url} stopped answering mid-run (during "
                                    "STANDIN-01) while cleaning up after the attack; cleanup "
                                    "not done, objects may be left in the cluster: delete "
                                    "configmap default/kp-standin-b; delete configmap "
                                    "default/kp-standin-a", max_s=60)


def test_cleanups_after_the_api_server_went_away_get_short_deadlines(tmp_path):
    """Suite directly: once a cleanup finds the API server gone, the remaining ones are
    still attempted, each with a deadline of at most 1 s (not the 3 s / 15 s of a live one),
    and so are the run-wide ones; then SuiteAbort."""
    earlier = load_catalog(throwaway_catalog(tmp_path, "cleanup_raises"))
    catalog = load_catalog(throwaway_catalog(tmp_path, "creates_configmaps"))
    with StandInApiServer(stop_on=lambda method, path, _: method == "DELETE") as api:
        suite = standin_suite(api, catalog, tmp_path)
        deadlines = []
        suite.defer("the run-wide cleanup", lambda: deadlines.append(suite.kube.timeout))
        assert suite.run_control(earlier.get("STANDIN-01")).verdict is Verdict.FAIL
        started = time.monotonic()
        with pytest.raises(SuiteAbort) as aborted:
            suite.run_control(catalog.get("STANDIN-01"))
        elapsed = time.monotonic() - started
    assert deadlines == [(1.0, 1.0)] and suite.kube.gone
    deletes = [path for method, path in api.requests if method == "DELETE"]
    assert deletes == ["/api/v1/namespaces/default/configmaps/kp-standin-b"]  # then refused
    # One line names all that may be left: the earlier control's and this one's.
    assert ("while cleaning up after the attack; cleanup not done, objects may be left in "
            "the cluster: STANDIN-01: delete configmap default/kp-standin; delete configmap "
            "default/kp-standin-b; delete configmap default/kp-standin-a") in str(aborted.value)
    assert elapsed < 10
    assert suite.results[-1].verdict is Verdict.ERROR
    assert str(aborted.value) in suite.results[-1].reason


def test_alert_source_that_cannot_start(tmp_path):
    """The Falco receiver's address is taken: one line, the run goes on, and the control
    that expects a Falco alert says NOT-VERIFIED with the reason (exit 0: not a pass, not a
    failure, unless --require-alerts)."""
    catalog = throwaway_catalog(tmp_path, "succeeds", expected="ALERTED",
                                extra="  alert: {source: falco, rule: a stand-in rule}\n")
    with StandInApiServer() as api, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        receiver = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog), "--falco-receiver", receiver)
    assert_one_clear_line(done, f"the falco alert source cannot start (--falco-receiver "
                                f"{receiver}: OSError: [Errno 98] Address already in use); "
                                "going on without it", code=0)
    row, = results(tmp_path)["controls"]
    assert row["verdict"] == "NOT-VERIFIED"
    assert "the falco alert source could not start: --falco-receiver" in row["reason"]


def test_audit_log_that_cannot_be_read(tmp_path):
    catalog = throwaway_catalog(tmp_path, "succeeds", expected="ALERTED",
                                extra="  alert: {source: audit, fields: {verb: list}}\n")
    with StandInApiServer() as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog), "--audit-log", str(tmp_path / "nope.log"))
    assert_one_clear_line(done, f"the audit alert source cannot start (--audit-log "
                                f"{tmp_path / 'nope.log'} is not a readable file)", code=0)
    row, = results(tmp_path)["controls"]
    assert row["verdict"] == "NOT-VERIFIED" and "could not start" in row["reason"]


def standin_suite(api: StandInApiServer, catalog, tmp_path: Path) -> Suite:
    kubeconfig = api.kubeconfig(tmp_path)
    kube = Kube.connect(kubeconfig, None, connect_timeout=3.0)
    target = Target("existing", kubeconfig, None, "the stand-in API server")
    return Suite(catalog=catalog, target=target, kube=kube, run_id="standin")


SECRET_PASSWORD = "s3cret-never-shown"


@pytest.mark.parametrize("content, expected", [
    (None, "cannot be read (No such file or directory)"),
    ('{"auths": {"r.example": {"auth": "' + SECRET_PASSWORD + '"', "is not JSON"),
    ('{"credsStore": "' + SECRET_PASSWORD + '"}', "has no `auths` object"),
    ('{"auths": {}}', "has no `auths` object"),
    ('["' + SECRET_PASSWORD + '"]', "has no `auths` object"),
], ids=["missing", "not-json", "no-auths", "empty-auths", "not-an-object"])
@pytest.mark.parametrize("through", ["option", "env"])
def test_bad_probe_image_pull_secret(tmp_path, content, expected, through):
    """--probe-image-pull-secret (or $KUBEPROBE_PROBE_IMAGE_PULL_SECRET) is checked before
    anything runs: one line naming the file and exit 2, its content never shown."""
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    if through == "option":
        done = run_suite(tmp_path, "--probe-image-pull-secret", str(path))
        where = "--probe-image-pull-secret"
    else:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
               "KUBEPROBE_PROBE_IMAGE_PULL_SECRET": str(path)}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "suites"), "-q",
                               "--reports-dir", str(tmp_path / "reports")],
                              capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
        done.elapsed = time.monotonic() - started
        where = "$KUBEPROBE_PROBE_IMAGE_PULL_SECRET"
    line = assert_one_clear_line(done, f"{where} {path}: {expected}", max_s=60)
    assert SECRET_PASSWORD not in done.stdout + done.stderr, line
    assert not (tmp_path / "reports" / "report.html").exists()
