"""The example nightly workflows (examples/github-actions, examples/gitlab-ci) are ready to
copy: the GitHub workflow passes actionlint (built from its Go module, tests/tools.py; with
shellcheck on the run scripts); the GitLab job is checked as data, since no GitLab linter runs
offline. Both run the same kubeprobe command line, which kubeprobe itself accepts; the
GitLab job's baseline download is run against a stand-in of GitLab's job-artifacts API.
Nothing here contacts a cluster or the internet.
"""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import workflows
from tests.test_bad_input import closed_port, kubeconfig
from tests.tools import ToolUnavailable, ensure_actionlint

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).parent / "samples"
EXPECTED = ["run", "--kubeconfig", "/k/staging.kubeconfig", "--reports-dir", "reports",
            "--baseline", "last-night/results.json", "--fail-on", "regression"]
FIRST_NIGHT = EXPECTED[:5] + EXPECTED[7:]


def actionlint(path: Path) -> subprocess.CompletedProcess:
    try:
        binary = ensure_actionlint()
    except ToolUnavailable as exc:
        pytest.fail(f"{exc} (.ci/install builds it: python3 -m tests.tools)")
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck; .ci/install "
                    "does): actionlint would skip the run scripts")
    return subprocess.run([str(binary), "-shellcheck", shutil.which("shellcheck"),
                           "-no-color", str(path)], capture_output=True, text=True, timeout=120)


def test_github_workflow_passes_actionlint():
    done = actionlint(workflows.GITHUB)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_actionlint_does_catch_mistakes(tmp_path):
    """The lint above can fail: an unknown input of a known action, an undefined context,
    and a shell mistake in a run script are all reported."""
    text = workflows.GITHUB.read_text()
    broken = text.replace("if-no-files-found: warn", "if-no-file-found: warn") \
                 .replace("${{ vars.STAGING_CONTEXT }}", "${{ var.STAGING_CONTEXT }}") \
                 .replace('echo "KUBECONFIG_FILE=$kubeconfig"', 'echo KUBECONFIG_FILE=$kubeconfig')
    assert broken.count("\n") == text.count("\n") and broken != text
    path = tmp_path / "broken.yml"
    path.write_text(broken)
    done = actionlint(path)
    assert done.returncode == 1
    assert 'input "if-no-file-found" is not defined' in done.stdout, done.stdout
    assert 'undefined variable "var"' in done.stdout, done.stdout
    assert "SC2086" in done.stdout, done.stdout  # shellcheck ran on the run script


def test_github_workflow_structure():
    flow = workflows.github()
    triggers = flow.get(True) or flow["on"]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    assert flow["permissions"] == {"contents": "read", "actions": "read", "checks": "write"}
    steps = flow["jobs"]["kubeprobe"]["steps"]
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    install = next(s for s in steps if s.get("name") == "Install kubeprobe")
    assert "pip install" in install["run"] and install["run"].rstrip().endswith(" .")
    upload = uses["actions/upload-artifact"]
    assert upload["if"] == "${{ always() }}" and upload["with"]["path"] == "reports/"
    download = next(s for s in steps if "gh run download" in s.get("run", ""))
    assert f"--name {upload['with']['name']} --dir last-night" in download["run"]
    assert "--status success" in download["run"]
    junit = uses["EnricoMi/publish-unit-test-result-action"]
    assert junit["with"]["files"] == "reports/junit.xml" and "always()" in junit["if"]
    # the secret goes through the environment, never into the script's text
    secret = next(s for s in steps if "STAGING_KUBECONFIG" in s.get("env", {}))
    assert "secrets." not in secret["run"] and "${{" not in secret["run"]


def test_github_kubeconfig_step_writes_a_0600_file(tmp_path):
    step = next(s for s in workflows.github()["jobs"]["kubeprobe"]["steps"]
                if "STAGING_KUBECONFIG" in s.get("env", {}))
    content = kubeconfig(tmp_path, closed_port()).read_text()
    (tmp_path / "runner").mkdir()
    env_file = tmp_path / "github_env"
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                           step["run"]], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "STAGING_KUBECONFIG": content,
                               "RUNNER_TEMP": str(tmp_path / "runner"),
                               "GITHUB_ENV": str(env_file)})
    assert done.returncode == 0, done.stderr
    written = tmp_path / "runner" / "staging.kubeconfig"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert written.read_text() == content + "\n"  # printf '%s\n': YAML does not mind
    assert env_file.read_text() == f"KUBECONFIG_FILE={written}\n"


@pytest.mark.parametrize("extract", [workflows.github_kubeprobe_argv,
                                     workflows.gitlab_kubeprobe_argv], ids=["github", "gitlab"])
def test_the_workflows_kubeprobe_command_line(tmp_path, extract):
    assert extract(tmp_path / "a", "/k/staging.kubeconfig") == EXPECTED
    assert extract(tmp_path / "b", "/k/staging.kubeconfig", with_baseline=False) == FIRST_NIGHT
    values = {"STAGING_CONTEXT": "stage ctx", "KUBEPROBE_PROBE_IMAGE": "reg/agent@sha256:ab"}
    assert extract(tmp_path / "c", "/k/staging.kubeconfig", values=values) == EXPECTED + [
        "--context", "stage ctx", "--probe-image", "reg/agent@sha256:ab"]


def _mkdirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("with_baseline", [True, False], ids=["baseline", "first-night"])
def test_kubeprobe_accepts_the_workflows_command_line(tmp_path, with_baseline):
    """The extracted arguments go to the real kubeprobe, collect-only: every option and the
    baseline file are checked, every catalog control collected, nothing attacked (the kubeconfig
    names a closed port; collection never connects)."""
    work = tmp_path / "job"
    _mkdirs(work / "last-night", tmp_path / "x")
    argv = workflows.github_kubeprobe_argv(tmp_path / "x", str(kubeconfig(tmp_path,
                                                                          closed_port())),
                                           with_baseline=with_baseline)
    if with_baseline:
        shutil.copy(SAMPLES / "ci-hardened.results.json", work / "last-night" / "results.json")
    done = subprocess.run([sys.executable, "-m", "kubeprobe.cli", *argv, "--co", "-q"],
                          capture_output=True, text=True, timeout=120, cwd=work,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout + done.stderr
    from kubeprobe.catalog import load_catalog
    assert f"{len(load_catalog().controls)} tests collected" in done.stdout
    assert (work / "reports").is_dir()


def test_gitlab_job_structure():
    job = workflows.gitlab_job()
    assert job["image"].startswith("python:3.11")
    assert any("schedule" in rule["if"] for rule in job["rules"])
    assert job["before_script"][0] == "python -m pip install ."
    assert 'install -m 600 "$STAGING_KUBECONFIG" /tmp/staging.kubeconfig' in job["before_script"]
    assert "export KUBECONFIG_FILE=/tmp/staging.kubeconfig" in job["before_script"]
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always" and artifacts["paths"] == ["reports/"]
    reports_dir = EXPECTED[EXPECTED.index("--reports-dir") + 1]
    assert artifacts["reports"]["junit"] == f"{reports_dir}/junit.xml"
    # the baseline is fetched from this very job's artifacts, under the results path
    fetch = next(item for item in job["script"] if "jobs/" in item)
    assert "reports/results.json?job=" in fetch and "CI_JOB_NAME" in fetch


class FakeGitLabArtifactsApi:
    """A stand-in for GitLab's `GET /projects/:id/jobs/artifacts/:ref/raw/*path?job=NAME`
    (NOT GitLab): answers `status` with `body`, records every request."""

    def __init__(self, status: int, body: bytes = b""):
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.requests.append((self.path, self.headers.get("JOB-TOKEN")))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v4"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status, outcome", [(200, "baseline"), (404, "none"), (403, "fails")])
def test_gitlab_baseline_download(tmp_path, status, outcome):
    body = (SAMPLES / "ci-hardened.results.json").read_bytes()
    api = FakeGitLabArtifactsApi(status, body if status == 200 else b"{}")
    try:
        script = "\n".join(workflows.gitlab_job()["script"][:2])
        done = subprocess.run(["sh", "-ec", script], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path,
                              env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                                   "CI_API_V4_URL": api.url, "CI_PROJECT_ID": "42",
                                   "CI_COMMIT_REF_NAME": "release/1.0",
                                   "CI_JOB_NAME": workflows.GITLAB_JOB,
                                   "CI_JOB_TOKEN": "job-token-123"})
    finally:
        api.close()
    assert api.requests == [(f"/api/v4/projects/42/jobs/artifacts/release%2F1.0/raw/reports/"
                             f"results.json?job={workflows.GITLAB_JOB}", "job-token-123")]
    baseline = tmp_path / "last-night" / "results.json"
    if outcome == "baseline":
        assert done.returncode == 0 and baseline.read_bytes() == body, done.stderr
    elif outcome == "none":
        assert done.returncode == 0 and not baseline.exists()
        assert "no baseline" in done.stdout
    else:
        assert done.returncode != 0 and "the job-artifacts API answered 403" in done.stderr
    # the rebaseline switch skips the download altogether
    if outcome == "baseline":
        again = subprocess.run(["sh", "-ec", script], capture_output=True, text=True,
                               timeout=60, cwd=tmp_path,
                               env={"PATH": "/usr/bin:/bin", "KUBEPROBE_REBASELINE": "1"})
        assert again.returncode == 0 and not baseline.exists()


def test_printed_command_for_ci():
    """What `python3 -m tests.workflows --kubeconfig ...` prints (CI runs it against the lab)."""
    done = subprocess.run([sys.executable, "-m", "tests.workflows", "--kubeconfig",
                           "/var/lib/kubeprobe-lab/admin.conf"], capture_output=True,
                          text=True, timeout=60, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("kubeprobe run --kubeconfig /var/lib/kubeprobe-lab/admin.conf "
                           "--reports-dir reports --baseline last-night/results.json "
                           "--fail-on regression\n")


def test_published_probe_image_goes_to_probe_image(tmp_path):
    """The nightly examples publish the probe image when a registry is named
    (`kubeprobe image publish`, issue 15) and hand its printed reference to --probe-image;
    a pinned KUBEPROBE_PROBE_IMAGE still wins."""
    publish = ["image", "publish", "--registry", "reg.example:5000"]
    standin_ref = "KUBEPROBE_ARGV " + json.dumps(publish)   # what the stand-in prints
    # GitLab: one script item publishes, then runs
    argv = workflows.gitlab_kubeprobe_argv(tmp_path / "g", "/k/staging.kubeconfig",
                                           values={"KUBEPROBE_PROBE_REGISTRY": "reg.example:5000"})
    assert argv == EXPECTED + ["--probe-image", standin_ref]
    pinned = workflows.gitlab_kubeprobe_argv(
        tmp_path / "h", "/k/staging.kubeconfig",
        values={"KUBEPROBE_PROBE_REGISTRY": "reg.example:5000",
                "KUBEPROBE_PROBE_IMAGE": "reg/agent@sha256:ab"})
    assert pinned == EXPECTED + ["--probe-image", "reg/agent@sha256:ab"]
    # GitHub: the publish step writes PUBLISHED_PROBE_IMAGE, the kubeprobe step uses it
    step = workflows.github_step("probe-image")
    work = tmp_path / "gh"
    (work / "runner").mkdir(parents=True)
    env_file = work / "github_env"
    bin_dir = work / ".standin-bin"
    bin_dir.mkdir()
    (bin_dir / "kubeprobe").write_text(workflows.STANDIN)
    (bin_dir / "kubeprobe").chmod(0o755)
    env = workflows.github_step_env(step, {"KUBEPROBE_PROBE_REGISTRY": "reg.example:5000",
                                           "KUBEPROBE_COSIGN_KEY": "-----BEGIN KEY-----"})
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                          capture_output=True, text=True, timeout=30, cwd=work,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env,
                               "RUNNER_TEMP": str(work / "runner"), "GITHUB_ENV": str(env_file)})
    assert done.returncode == 0, done.stderr
    key = work / "runner" / "cosign.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    published = "KUBEPROBE_ARGV " + json.dumps(publish + ["--sign-key", str(key)])
    assert env_file.read_text() == f"PUBLISHED_PROBE_IMAGE={published}\n"
    kubeprobe_step = workflows.github_step("kubeprobe")
    argv = workflows.run_script(
        kubeprobe_step["run"], ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"],
        {**workflows.github_step_env(kubeprobe_step, {}), "KUBECONFIG_FILE": "/k/staging.kubeconfig",
         "PUBLISHED_PROBE_IMAGE": "reg.example:5000/kubeprobe/agent@sha256:cd"},
        tmp_path / "gh2", with_baseline=True)
    assert argv == EXPECTED + ["--probe-image", "reg.example:5000/kubeprobe/agent@sha256:cd"]
