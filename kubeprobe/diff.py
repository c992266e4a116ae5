"""Baseline diff: what changed between an earlier run's results.json and this one.

    kubeprobe diff OLD/results.json NEW/results.json     the summary; exit 1 on regressions
    pytest suites/ --baseline OLD/results.json [--fail-on regression]

A verdict stands in one of three places:

    held      PASS                  the control blocked (or alerted) with proof
    unproven  SKIP, NOT-VERIFIED    nothing was judged either way
    broken    FAIL, ERROR           the attack got through, or nothing proves the control held

Per control id present in both runs:

  regression        it held before and does not now (PASS -> FAIL, ERROR, NOT-VERIFIED or
                    SKIP: the proof is gone), or it was not broken before and is now
                    (SKIP/NOT-VERIFIED -> FAIL/ERROR)
  fix               it did not hold before and holds now (FAIL, ERROR, SKIP, NOT-VERIFIED ->
                    PASS)
  authority change  same verdict, but the blocking authorities named in `observed` differ
                    (`BLOCKED (http_401)` -> `BLOCKED (connection_refused)`; an authority that
                    appears or disappears beside SUCCEEDED counts too)

  added / removed   the id is only in the new / only in the baseline run (another catalog or
                    --controls): neither a regression nor a fix.

Not listed (shown on the terminal as "other"): a move within `broken` (FAIL <-> ERROR), within
`unproven` (SKIP <-> NOT-VERIFIED), and broken -> unproven (the control is no longer judged: not
a fix). With `--fail-on regression` the exit code is 1 exactly when `regressions` is not
empty, else 0, whatever FAILs the run knows of; an exit 2 stays 2.

The results.json key `baseline_diff` (only when --baseline is given):
    {"baseline": PATH, "regressions": [...], "fixes": [...], "added": [...], "removed": [...],
     "authority_changes": [...]}
each item {"id", "title", "before": {"verdict", "observed"} | null, "after": ... | null}.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from kubeprobe.outcome import Verdict

HELD = frozenset({Verdict.PASS.value})
UNPROVEN = frozenset({Verdict.SKIP.value, Verdict.NOT_VERIFIED.value})
BROKEN = frozenset({Verdict.FAIL.value, Verdict.ERROR.value})
VERDICTS = tuple(v.value for v in Verdict)
KINDS = ("regressions", "fixes", "added", "removed", "authority_changes")
_AUTHORITY = re.compile(r"BLOCKED \(([^)]*)\)")
FAIL_ON = ("failure", "regression")


class ResultsError(Exception):
    """A results.json that cannot serve as one side of a diff; the message is one line."""


def load_results(path: Path | str) -> dict[str, Any]:
    """Read and check a kubeprobe results.json: a JSON object with tool `kubeprobe`, schema 1
    and `controls`, a list of objects with string `id`, `title`, `observed` and a known
    `verdict`, each id once. Raise ResultsError naming the file and the first problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") \
            from None
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not JSON (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ResultsError(f"{path}: not JSON ({exc})") from None

    def bad(what: str) -> ResultsError:
        return ResultsError(f"{path}: not a kubeprobe results.json: {what}")

    if not isinstance(doc, dict):
        raise bad(f"the top level is a {type(doc).__name__}, not an object")
    if doc.get("tool") != "kubeprobe":
        raise bad(f"`tool` is {doc.get('tool')!r}, not 'kubeprobe'")
    if doc.get("schema") != 1:
        raise bad(f"`schema` is {doc.get('schema')!r}; this kubeprobe reads schema 1")
    if doc.get("cannot_start"):
        # Comparing with a run that judged nothing would make every control "added": no
        # regression could ever show. The last run that did judge is kept beside it.
        raise ResultsError(f"{path}: the results of a run that could not start "
                           f"({doc.get('error', 'no reason recorded')}); the run before it "
                           f"is {path.with_name('results.previous.json')}")
    controls = doc.get("controls")
    if not isinstance(controls, list):
        raise bad("`controls` is missing or not a list")
    seen: set[str] = set()
    for index, row in enumerate(controls):
        where = f"controls[{index}]"
        if not isinstance(row, dict):
            raise bad(f"{where} is not an object")
        for key in ("id", "title", "observed", "verdict"):
            if not isinstance(row.get(key), str) or (key == "id" and not row[key]):
                raise bad(f"{where}: `{key}` is missing or not a string")
        if row["verdict"] not in VERDICTS:
            raise bad(f"{where} ({row['id']}): verdict {row['verdict']!r} is not one of "
                      f"{', '.join(VERDICTS)}")
        if row["id"] in seen:
            raise bad(f"{where}: control {row['id']} appears twice")
        seen.add(row["id"])
    return doc


def authorities(observed: str) -> frozenset[str]:
    """The blocking authorities an `observed` string names: 'BLOCKED (http_401); SUCCEEDED'
    -> {'http_401'}."""
    return frozenset(_AUTHORITY.findall(observed or ""))


def classify(before: str, after: str) -> str | None:
    """'regressions', 'fixes' or None for a verdict change (see the module docstring)."""
    if before in HELD and after not in HELD:
        return "regressions"
    if before in UNPROVEN and after in BROKEN:
        return "regressions"
    if before not in HELD and after in HELD:
        return "fixes"
    return None


def _side(row: dict | None) -> dict | None:
    return None if row is None else {"verdict": row["verdict"], "observed": row["observed"]}


def _item(before: dict | None, after: dict | None) -> dict[str, Any]:
    row = after if after is not None else before
    return {"id": row["id"], "title": row["title"], "before": _side(before),
            "after": _side(after)}


def compare(baseline: dict, current: dict, baseline_path: Path | str) -> dict[str, Any]:
    """The `baseline_diff` document (shape in the module docstring). Items follow the
    current run's order; removed ones the baseline's."""
    old = {row["id"]: row for row in baseline["controls"]}
    new_ids = {row["id"] for row in current["controls"]}
    diff: dict[str, Any] = {"baseline": str(baseline_path), **{k: [] for k in KINDS}}
    for row in current["controls"]:
        before = old.get(row["id"])
        if before is None:
            diff["added"].append(_item(None, row))
            continue
        kind = classify(before["verdict"], row["verdict"])
        if kind is None and before["verdict"] == row["verdict"] and \
                authorities(before["observed"]) != authorities(row["observed"]):
            kind = "authority_changes"
        if kind is not None:
            diff[kind].append(_item(before, row))
    diff["removed"] = [_item(row, None) for row in baseline["controls"]
                       if row["id"] not in new_ids]
    return diff


def other_changes(baseline: dict, current: dict) -> list[dict[str, Any]]:
    """Verdict changes that are neither a regression nor a fix (FAIL <-> ERROR, ...)."""
    old = {row["id"]: row for row in baseline["controls"]}
    return [_item(old[row["id"]], row) for row in current["controls"]
            if row["id"] in old and old[row["id"]]["verdict"] != row["verdict"]
            and classify(old[row["id"]]["verdict"], row["verdict"]) is None]


def gate(exitstatus: int, fail_on: str, diff: dict | None) -> int:
    """The run's exit code under --fail-on. `failure` (the default) leaves it alone;
    `regression` turns a 0 or 1 into 1 exactly when there are regressions (none without a
    baseline). Any other code (2: the suite could not run or vouch for the cluster) stays."""
    if fail_on != "regression" or exitstatus not in (0, 1):
        return exitstatus
    return 1 if diff and diff["regressions"] else 0


LABELS = {"regressions": "REGRESSION", "fixes": "FIX", "authority_changes": "AUTHORITY",
          "added": "ADDED", "removed": "REMOVED"}


def _state(side: dict | None) -> str:
    return "-" if side is None else f"{side['verdict']} {side['observed']}"


def summary_lines(diff: dict, others: list[dict] = ()) -> list[str]:
    """The terminal summary: a count line, then one line per changed control, regressions
    first."""
    counts = ", ".join(f"{len(diff[k])} {k.replace('_', ' ')}" for k in KINDS)
    lines = [f"since {diff['baseline']}: {counts}"]
    for kind in ("regressions", "fixes", "authority_changes", "added", "removed"):
        for item in diff[kind]:
            lines.append(f"{LABELS[kind]:11} {item['id']:18} {_state(item['before'])} -> "
                         f"{_state(item['after'])}  {item['title']}")
    for item in others:
        lines.append(f"{'other':11} {item['id']:18} {_state(item['before'])} -> "
                     f"{_state(item['after'])}  (neither a regression nor a fix)")
    return lines


def main(argv: list[str]) -> int:
    """`kubeprobe diff OLD NEW`: 0 no regression, 1 regressions, 2 bad input (one line)."""
    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        print("kubeprobe: usage: kubeprobe diff OLD/results.json NEW/results.json",
              file=sys.stderr)
        return 2
    try:
        old, new = load_results(argv[0]), load_results(argv[1])
    except ResultsError as exc:
        print(f"kubeprobe: {exc}", file=sys.stderr)
        return 2
    diff = compare(old, new, argv[0])
    print("\n".join(summary_lines(diff, other_changes(old, new))))
    return 1 if diff["regressions"] else 0
