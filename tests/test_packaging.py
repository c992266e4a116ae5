"""kubeprobe installs like any pytest plugin, and a checkout still works without installing.

- In a checkout, the root conftest.py and the `pytest11` entry point never register the
  plugin twice (an entry point is stood in by a dist-info directory on PYTHONPATH).
- A wheel built from this tree, installed in a fresh venv (no system site-packages, its
  dependencies from the wheelhouse of tests/tools.py, nothing from the network), gives a
  `kubeprobe` command and a pytest plugin that work from an empty directory: the catalog, the
  attack modules, the suite and its run-time files come from the installed package. No
  cluster is touched: the runs stop at option checking, or only collect.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubeprobe import agent, resources
from kubeprobe.catalog import load_catalog

REPO = Path(__file__).resolve().parent.parent

# Run inside pytest with a probe plugin: how kubeprobe.plugin is registered, as JSON.
PROBE = """
import json, sys
import pytest

class Probe:
    def pytest_configure(self, config):
        pm = config.pluginmanager
        import kubeprobe.plugin as plugin
        names = [name for name, p in pm.list_name_plugin() if p is plugin]
        print("PROBE " + json.dumps({"names": names,
                                     "registered": pm.is_registered(plugin)}), flush=True)

sys.exit(pytest.main(sys.argv[1:], plugins=[Probe()]))
"""


def entry_point_standin(tmp_path: Path) -> Path:
    """A dist-info whose only content is kubeprobe's pytest11 entry point, as an installed
    kubeprobe has it."""
    site = tmp_path / "site"
    info = site / "kubeprobe_entry_point_standin-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kubeprobe-entry-point-standin"
                                   "\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[pytest11]\nkubeprobe = kubeprobe.plugin\n")
    return site


def registration(tmp_path: Path, *args: str, site: Path | None = None,
                 env: dict | None = None) -> tuple[dict, subprocess.CompletedProcess]:
    path = os.pathsep.join([str(REPO)] + ([str(site)] if site else []))
    done = subprocess.run([sys.executable, "-c", PROBE, "--co", "-q", "-p", "no:randomly",
                           *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "PYTHONPATH": path, **(env or {})})
    line = next((x for x in done.stdout.splitlines() if x.startswith("PROBE ")), None)
    assert line is not None, done.stdout + done.stderr
    return json.loads(line[len("PROBE "):]), done


@pytest.mark.parametrize("entry_point, env, args", [
    (True, {}, ()),
    (False, {}, ()),
    (True, {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, ()),
    (True, {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, ("-p", "kubeprobe")),
], ids=["entry-point", "checkout-only", "autoload-off", "autoload-off-p-kubeprobe"])
def test_the_plugin_is_registered_once_in_a_checkout(tmp_path, entry_point, env, args):
    site = entry_point_standin(tmp_path) if entry_point else None
    seen, done = registration(tmp_path, *args, "suites/", "--controls", "ETCD-0*",
                              "--reports-dir", str(tmp_path / "reports"), site=site, env=env)
    assert seen == {"names": ["kubeprobe"], "registered": True}, done.stdout + done.stderr
    assert done.returncode == 0 and "5 tests collected" in done.stdout, done.stdout + done.stderr


def test_p_no_kubeprobe_keeps_it_out(tmp_path):
    seen, _ = registration(tmp_path, "tests/test_diff.py", site=entry_point_standin(tmp_path),
                           *("-p", "no:kubeprobe"))
    assert seen == {"names": [], "registered": False}


def test_checkout_reads_its_own_tree():
    assert resources.IN_CHECKOUT
    assert resources.ATTACKS_DIR == REPO / "attacks" == load_catalog().attacks_dir
    assert resources.SUITES_DIR == REPO / "suites"
    assert resources.data("kind-config.yaml") == REPO / "kind-config.yaml"
    assert resources.DEFAULT_REPORTS == REPO / "reports"


# ------------------------------------------------------------------------- the wheel

WHEEL_CHECK = """
import json
from pathlib import Path
from kubeprobe import agent, auditor, falco, profiles, reference, resources
from kubeprobe.catalog import load_catalog
from kubeprobe.lab import build, config
catalog = load_catalog()
print(json.dumps({
    "in_checkout": resources.IN_CHECKOUT,
    "paths": [str(p) for p in (catalog.path, catalog.attacks_dir, resources.SUITES_DIR,
                               resources.DATA_ROOT, agent.AGENT_DIR, falco.RULES_DIR,
                               build.BUILD_SOURCES, *profiles.KIND_CONFIGS.values())],
    "missing": [str(p) for p in [*profiles.KIND_CONFIGS.values(),
                                 *(m.host_path for p in profiles.KIND_CONFIGS
                                   for m in config.kind_mounts(config.load_kind_config(p))),
                                 *(build.BUILD_SOURCES / n for n in (
                                     f"kubernetes/{build.DEFAULT_VERSION}/go.mod",
                                     f"kubernetes/{build.DEFAULT_VERSION}/go.sum",
                                     "pause/main.go")),
                                 *(list((build.BUILD_SOURCES / "etcd").glob("v*/go.sum"))
                                   or [build.BUILD_SOURCES / "etcd/<version>/go.sum"])]
                if not Path(p).is_file()],
    "manifests": {p: len(profiles.manifest_files(p)) for p in profiles.KIND_CONFIGS},
    "falco_rules": sorted(falco.rules_hashes()),
    "agent_source_hash": agent.source_hash(),
    "reports_default": str(resources.DEFAULT_REPORTS),
    "report_files": [str(p) for p in (auditor.ASSETS / "report.css", auditor.ASSETS / "report.js",
                                      reference.DOCS_CONTROLS) if Path(p).is_file()],
}))
"""


def _timed(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    return done, round(time.monotonic() - started, 1)


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_outside_a_checkout(tmp_path):
    from tests.tools import ToolUnavailable, ensure_wheelhouse
    try:
        wheelhouse = ensure_wheelhouse()
    except ToolUnavailable as exc:
        pytest.fail(f"no wheelhouse ({exc}): run `python3 -m tests.tools` (.ci/install does)")
    # Build from a copy of the tree: nothing is written into the checkout.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "reports", "__pycache__", "*.egg-info", ".build-python", "dist"))
    offline = ["--no-index", "--find-links", str(wheelhouse), "--disable-pip-version-check"]
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH, no checkout
    built, build_s = _timed([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q",
                             "-w", str(tmp_path / "dist"), *offline], cwd=src, env=clean)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "dist").glob("kubeprobe-*.whl")
    venv = tmp_path / "venv"
    made, venv_s = _timed([sys.executable, "-m", "venv", str(venv)], env=clean)
    assert made.returncode == 0, made.stderr
    installed, install_s = _timed([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                   *offline, str(wheel)], env=clean)
    assert installed.returncode == 0, installed.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**clean, "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}

    def run(*cmd: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120,
                              cwd=empty, env={**env, **(extra or {})})

    site = Path(run("python", "-c", "import kubeprobe, pathlib; "
                    "print(pathlib.Path(kubeprobe.__file__).parent)").stdout.strip())
    assert site.is_relative_to(venv), site
    check = run("python", "-c", WHEEL_CHECK)
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout)
    assert found["in_checkout"] is False
    assert all(Path(p).is_relative_to(site) for p in found["paths"]), found["paths"]
    assert found["missing"] == []
    assert found["manifests"] == {"hardened": 4, "weak": 1, "decoy": 2}
    assert found["falco_rules"] == ["kubeprobe_rules.yaml"]
    assert found["agent_source_hash"] == agent.source_hash()  # same probe image tag
    assert found["reports_default"] == "reports"
    assert len(found["report_files"]) == 3, found["report_files"]   # the report's CSS, JS
    assert all(Path(p).is_relative_to(site) for p in found["report_files"])  # and reference

    catalog = run("kubeprobe", "catalog")
    assert catalog.returncode == 0, catalog.stderr
    assert catalog.stdout.splitlines()[-1] == \
        f"{len(load_catalog().controls)} controls, profiles: default, detection"

    bad = run("kubeprobe", "run", "--target", "nosuch")
    assert bad.returncode == 2
    lines = [x for x in (bad.stdout + bad.stderr).splitlines() if "kubeprobe: " in x]
    assert lines == ["Exit: kubeprobe: --target 'nosuch': must be one of auto, existing, "
                     "kind, lab"], bad.stdout + bad.stderr

    # The installed suite collects every control (nothing runs: --co), reports in ./reports.
    collected = run("kubeprobe", "run", "--co", "-q")
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert f"{len(load_catalog().controls)} tests collected" in collected.stdout
    assert (empty / "reports").is_dir() and not (site / "suites" / ".pytest_cache").exists()
    # Plain pytest: the entry point loads the plugin; also when autoloading is off and only
    # `-p kubeprobe` names it.
    for extra in ({}, {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}):
        plain = run("pytest", "--co", "-q", "-p", "kubeprobe", "-p", "no:cacheprovider",
                    "--pyargs", "kubeprobe.suites", "--controls", "KUBELET-*", extra=extra)
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert "8 tests collected" in plain.stdout, plain.stdout
    off = run("pytest", "--co", "-q", "-p", "kubeprobe", "--pyargs", "kubeprobe.suites",
              "--target", "nosuch")
    assert off.returncode == 2 and "--target 'nosuch'" in off.stdout + off.stderr
    diff = run("kubeprobe", "diff", str(REPO / "tests/samples/ci-hardened.results.json"),
               str(REPO / "tests/samples/ci-weak.results.json"))
    assert diff.returncode == 1 and "37 regressions" in diff.stdout
    print(f"\nwheel {wheel.name} {wheel.stat().st_size // 1024} KiB: built in {build_s} s, "
          f"venv {venv_s} s, install from the wheelhouse {install_s} s")
