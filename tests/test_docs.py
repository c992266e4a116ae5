"""docs/controls.md is what `kubeprobe docs controls` writes from the catalog and the attack
docstrings: a change to either without regenerating it fails here."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from kubeprobe.catalog import load_catalog
from kubeprobe.reference import DOCS_CONTROLS, anchor, render

REPO = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()


def docs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubeprobe.cli", "docs", "controls", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_the_committed_reference_is_what_the_generator_writes():
    assert DOCS_CONTROLS.read_text() == render(CATALOG), \
        "docs/controls.md is stale: run `kubeprobe docs controls` and commit it"


def test_every_control_has_its_anchor_and_its_attack_docstring():
    text = DOCS_CONTROLS.read_text()
    headings = re.findall(r"^## (\S+)$", text, flags=re.M)
    assert headings == [c.id for c in CATALOG.controls]
    for control in CATALOG.controls:
        assert f"](#{anchor(control.id)})" in text          # the index links to it
        section = text.split(f"## {control.id}\n", 1)[1].split("\n## ", 1)[0]
        assert f"[`{control.attack}`](../attacks/{control.attack}.py)" in section
        assert control.remediation in section and control.guidance in section


def test_check_fails_on_a_stale_file_and_passes_on_a_fresh_one(tmp_path):
    out = tmp_path / "controls.md"
    assert docs("--check", "--output", str(out)).returncode == 1   # missing: stale
    written = docs("--output", str(out))
    assert written.returncode == 0, written.stderr
    assert docs("--check", "--output", str(out)).returncode == 0
    out.write_text(out.read_text().replace("ETCD-01", "ETCD-1", 1))
    stale = docs("--check", "--output", str(out))
    assert stale.returncode == 1
    assert stale.stderr.strip() == (f"kubeprobe: {out} is stale: run `kubeprobe docs "
                                    "controls`")


def test_readme_links_the_reference():
    assert "(docs/controls.md)" in (REPO / "README.md").read_text()
