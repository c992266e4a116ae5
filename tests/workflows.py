"""The example nightly workflows (examples/), read as data, and their kubeprobe command line
as the CI would run it.

    python3 -m tests.workflows [--gitlab] [--kubeconfig FILE] [--no-baseline]

prints the `kubeprobe run ...` command the workflow's own step runs (shell-quoted, relative to
the job's working directory): the step's script is executed by the shell the CI uses, with a
stand-in `kubeprobe` on PATH that only records its arguments. Nothing is contacted.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GITHUB = REPO / "examples" / "github-actions" / "nightly-staging.yml"
GITLAB = REPO / "examples" / "gitlab-ci" / "nightly-staging.gitlab-ci.yml"
GITLAB_JOB = "kubeprobe-nightly-staging"
BASELINE = "last-night/results.json"

STANDIN = """#!/usr/bin/env python3
# Stand-in for the kubeprobe command: records its arguments, runs nothing.
import json, sys
print("KUBEPROBE_ARGV " + json.dumps(sys.argv[1:]), flush=True)
"""


def github() -> dict:
    return yaml.safe_load(GITHUB.read_text())


def github_step(step_id: str) -> dict:
    steps = github()["jobs"]["kubeprobe"]["steps"]
    return next(s for s in steps if s.get("id") == step_id)


def gitlab_job() -> dict:
    return yaml.safe_load(GITLAB.read_text())[GITLAB_JOB]


def gitlab_run_script() -> str:
    return next(item for item in gitlab_job()["script"] if "kubeprobe run" in item)


_EXPRESSION = re.compile(r"^\$\{\{\s*(vars|secrets)\.(\w+)\s*\}\}$")


def github_step_env(step: dict, values: dict[str, str]) -> dict[str, str]:
    """The step's env with `${{ vars.X }}` / `${{ secrets.X }}` replaced by values[X] (unset:
    empty, as GitHub does)."""
    env = {}
    for key, raw in (step.get("env") or {}).items():
        match = _EXPRESSION.match(str(raw))
        env[key] = values.get(match.group(2), "") if match else str(raw)
    return env


def run_script(script: str, shell: list[str], env: dict[str, str], workdir: Path,
               with_baseline: bool) -> list[str]:
    """Execute a workflow's script in `workdir` with the stand-in kubeprobe first on PATH;
    return the arguments kubeprobe got."""
    bin_dir = workdir / ".standin-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    standin = bin_dir / "kubeprobe"
    standin.write_text(STANDIN)
    standin.chmod(standin.stat().st_mode | stat.S_IXUSR)
    if with_baseline:
        (workdir / BASELINE).parent.mkdir(parents=True, exist_ok=True)
        (workdir / BASELINE).write_text("{}")  # only its presence counts here
    done = subprocess.run([*shell, script], capture_output=True, text=True, timeout=60,
                          cwd=workdir, env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env})
    if done.returncode != 0:
        raise RuntimeError(f"the workflow's script failed ({done.returncode}): {done.stderr}")
    lines = [x for x in done.stdout.splitlines() if x.startswith("KUBEPROBE_ARGV ")]
    if len(lines) != 1:
        raise RuntimeError(f"the script ran kubeprobe {len(lines)} times: {done.stdout}")
    return json.loads(lines[0].split(" ", 1)[1])


def github_kubeprobe_argv(workdir: Path, kubeconfig: str, with_baseline: bool = True,
                          values: dict[str, str] | None = None) -> list[str]:
    """The arguments of `kubeprobe` in the GitHub workflow's step `kubeprobe` (bash, as
    `shell: bash` runs it: --noprofile --norc -eo pipefail)."""
    step = github_step("kubeprobe")
    env = {**github_step_env(step, values or {}), "KUBECONFIG_FILE": kubeconfig}
    return run_script(step["run"], ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"],
                      env, workdir, with_baseline)


def gitlab_kubeprobe_argv(workdir: Path, kubeconfig: str, with_baseline: bool = True,
                          values: dict[str, str] | None = None) -> list[str]:
    """The same for the GitLab job's script item (POSIX sh: the image may have no bash)."""
    env = {**(values or {}), "KUBECONFIG_FILE": kubeconfig}
    return run_script(gitlab_run_script(), ["sh", "-ec"], env, workdir, with_baseline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.workflows")
    parser.add_argument("--gitlab", action="store_true", help="the GitLab job (default: the "
                        "GitHub workflow)")
    parser.add_argument("--kubeconfig", default="$KUBECONFIG_FILE")
    parser.add_argument("--no-baseline", action="store_true",
                        help="as on the first night (no last-night/results.json)")
    args = parser.parse_args(argv)
    extract = gitlab_kubeprobe_argv if args.gitlab else github_kubeprobe_argv
    with tempfile.TemporaryDirectory() as tmp:
        command = ["kubeprobe", *extract(Path(tmp), args.kubeconfig, not args.no_baseline)]
    print(shlex.join(command) if args.kubeconfig != "$KUBECONFIG_FILE" else
          shlex.join(command).replace("'$KUBECONFIG_FILE'", '"$KUBECONFIG_FILE"'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
