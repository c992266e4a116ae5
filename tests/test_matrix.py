"""Self-tests of `kubeprobe matrix` (kubeprobe/matrix.py): the combined control x version table
from real results.json documents, differing verdicts first, and its refusals.

The matrix's real runs (the lab at 1.35, 1.36 and 1.37) take about 25 minutes and are measured
by the documented command, not here (README: "Kubernetes versions").
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeprobe import matrix
from kubeprobe.cli import main as cli_main


def _results(version: str, verdicts: dict[str, str]) -> dict:
    return {"tool": "kubeprobe", "schema": 1, "summary": {},
            "environment": {"Kubernetes": version, "Node cgroups": "cgroup v1 (deprecated; allowed): vm"},
            "controls": [{"id": cid, "title": f"title of {cid}", "observed": f"{v} observed",
                          "verdict": v, "reason": f"why {cid} {version}"} for cid, v in verdicts.items()]}


def _run(profile, version, verdicts, tmp_path, exit_status=0) -> matrix.Run:
    return matrix.Run(profile, version, tmp_path / profile / version, exit_status, 90.0,
                      results=_results(version, verdicts))


def test_differing_controls_come_first_with_each_versions_observation(tmp_path):
    runs = [_run("hardened", "v1.35.4", {"A": "PASS", "B": "PASS", "C": "PASS"}, tmp_path),
            _run("hardened", "v1.37.2", {"A": "PASS", "B": "PASS", "C": "FAIL"}, tmp_path),
            _run("weak", "v1.35.4", {"A": "FAIL", "B": "FAIL", "C": "FAIL"}, tmp_path, 1),
            _run("weak", "v1.37.2", {"A": "FAIL", "B": "ERROR", "C": "FAIL"}, tmp_path, 1)]
    table = matrix.combine(runs)
    assert [r["id"] for r in table["rows"]] == ["B", "C", "A"]  # catalog order within each group
    assert table["differing"] == ["B", "C"]
    assert {r["id"]: r["differs_in"] for r in table["rows"]} == {"A": [], "B": ["weak"], "C": ["hardened"]}
    assert table["rows"][1]["cells"]["hardened v1.37.2"]["verdict"] == "FAIL"
    md = matrix.to_markdown(table)
    assert md.index("| B (differs: weak)") < md.index("| C (differs: hardened)") < md.index("| A |")
    assert "- hardened v1.37.2: **FAIL**, FAIL observed: why C v1.37.2" in md
    assert "cgroup v1 (deprecated; allowed)" in md


def test_a_version_that_did_not_run_is_not_a_difference(tmp_path):
    runs = [_run("hardened", "v1.35.4", {"A": "PASS"}, tmp_path),
            matrix.Run("hardened", "v1.36.3", tmp_path / "x", error="Kubernetes v1.36.3 is not built")]
    table = matrix.combine(runs)
    assert table["differing"] == []
    assert "Kubernetes v1.36.3 is not built" in matrix.to_markdown(table)


@pytest.mark.parametrize("argv, message", [
    (["--versions", "1.34"], "supported minors are 1.35, 1.36, 1.37"),
    (["--versions", ","], "names no version"),
    (["--profiles", "strong"], "each must be one of decoy, hardened, weak"),
])
def test_bad_options_get_one_line_and_exit_2(argv, message, capsys):
    assert cli_main(["matrix", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unbuilt_version_with_no_build_is_refused_not_run(tmp_path, monkeypatch, capsys):
    from kubeprobe.lab import build
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert build.read_stamp(version="1.35") is None
    code = cli_main(["matrix", "--profiles", "hardened", "--versions", "1.35", "--no-build",
                     "--reports-dir", str(tmp_path / "m")])
    assert code == 3
    written = json.loads((tmp_path / "m" / "matrix.json").read_text())
    assert "is not built" in written["columns"][0]["error"]
    assert not (tmp_path / "m" / "hardened").exists()  # no suite ran
