"""`kubeprobe sweep`: remove what earlier runs left behind, and name them at a run's start.

    kubeprobe sweep --run-id ID | --all  [--kubeconfig F] [--context C] [--reports-dir D]

What a run left is found three ways, and each thing is removed once:

- its local journal `<reports-dir>/journal/<run-id>.jsonl` (kubeprobe.journal): every record
  not struck out (objects, planted files);
- the label `kubeprobe.io/run-id=<run-id>` on every kind the suite creates (journal.KINDS:
  Deployments, ReplicaSets, Pods, Services, ServiceAccounts, ConfigMaps, Namespaces, Nodes,
  CSRs), in every namespace: what a lost or foreign journal cannot tell;
- ConfigMap `kubeprobe-journal` in the run's namespace: planted files (no label on a file),
  read before the namespace is deleted.

Planted files are removed through the node access the run used (`local://`: this machine,
as on the lab; `docker://<node>`: docker exec, as on kind; `pod://<node>`: a one-shot
privileged pod on that node, kubeprobe.nodepod, running --probe-image or the image the local
journal names); where that is not available the sweep says so and lists them. Objects are deleted at once (no grace period); the sweep then
waits until none is left (a namespace takes a few seconds to empty). One line per thing
removed; exit 0 when nothing is left, 1 with one line naming what could not be removed,
2 for bad usage. Running it again removes nothing and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from kubeprobe import resources
from kubeprobe.errors import one_line
from kubeprobe.journal import (KINDS, RUN_ID_LABEL, JournalFile, ObjectRef, PlantedFile, Undo,
                               append_event, journal_path, journals, read_cluster_journal,
                               read_journal)
from kubeprobe.waiting import WaitTimeout, wait_for

DEFAULT_REPORTS = resources.DEFAULT_REPORTS
WAIT_GONE_S = 120.0
ORDER = {kind: i for i, kind in enumerate(KINDS)}


def run_namespace(run_id: str) -> str:
    return f"kubeprobe-{run_id}"


def what(undo: Undo) -> str:
    """The thing itself, for a line of output."""
    if isinstance(undo, ObjectRef):
        return f"{undo.kind} {undo.where}"
    where = f"{undo.pod}/{undo.container}" if undo.pod else f"container {undo.container_id[:12]}"
    return f"planted file {undo.inside} in {where} on node {undo.node} ({undo.node_access})"


@dataclass
class Step:
    """One thing to remove, with where it was learnt of (and its journal seq, to strike)."""
    run_id: str
    undo: Undo
    sources: list[str] = field(default_factory=list)
    seq: int | None = None
    terminating: bool = False      # already being deleted (found so by its label)


def plan(run_id: str, journal: JournalFile | None, labelled: Iterable[tuple],
         cluster_entries: Iterable[tuple[str, Undo]] = ()) -> list[Step]:
    """Everything to remove for one run, each once: planted files first (newest first, as
    the run would have), then objects in KINDS order (controllers before what they own,
    contents before their namespace, cluster-scoped last). Pure: the unit tests call it."""
    steps: dict[tuple, Step] = {}

    def add(undo: Undo, source: str, seq: int | None = None, terminating: bool = False):
        step = steps.setdefault(undo.key, Step(run_id, undo))
        if source not in step.sources:
            step.sources.append(source)
        step.seq = step.seq if seq is None else seq
        step.terminating = step.terminating or terminating

    if journal is not None:
        for entry in journal.pending:
            add(entry.undo, "journal", seq=entry.seq)
    for _control, undo in cluster_entries:
        add(undo, "cluster journal")
    for ref, labelled_run, terminating in labelled:
        if labelled_run == run_id:
            add(ref, "label", terminating=terminating)

    def order(step: Step):
        if isinstance(step.undo, PlantedFile):
            return (0, -(step.seq or 0), step.undo.path)
        return (1, ORDER[step.undo.kind], step.undo.namespace or "", step.undo.name)
    return sorted(steps.values(), key=order)


# -- the cluster ----------------------------------------------------------------------------

@dataclass
class Cluster:
    kube: Any = None
    error: str | None = None       # why there is no kube
    kubeconfig: Path | None = None
    context: str | None = None


def connect(kubeconfig: Path | None, context: str | None) -> Cluster:
    from kubeprobe.kube import Kube, TargetError
    try:
        return Cluster(Kube.connect(kubeconfig, context), None, kubeconfig, context)
    except TargetError as exc:
        return Cluster(None, str(exc), kubeconfig, context)


def default_kubeconfig() -> Path | None:
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    home = Path.home() / ".kube" / "config"
    return home if home.is_file() else None


def list_labelled(kube: Any, selector: str) -> tuple[list[tuple], list[str]]:
    """(objects, kinds that could not be listed) for a label selector, every KINDS kind. An
    API server that does not answer at all is asked once, not once per kind."""
    from kubeprobe.kube import no_answer
    found, failed = [], []
    for kind in KINDS:
        try:
            found += kube.list_labelled(kind, selector)
        except Exception as exc:  # noqa: BLE001 - named in the output
            if no_answer(exc):
                return found, failed + [f"the API server did not answer: {one_line(exc)}"]
            failed.append(f"cannot list {kind}s: {one_line(exc)}")
    return found, failed


# -- one run ------------------------------------------------------------------------------

@dataclass
class Outcome:
    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)     # could not be removed, one phrase each


def _through_pod(step: Step, probe_image: str | None) -> tuple[Undo | None, str]:
    """A file planted through a privileged pod (pod://<node>) is removed by another such pod.
    Its image comes from --probe-image, else from the local journal; never from the
    in-cluster journal alone (anyone who can write a ConfigMap in the run's namespace could
    name an image the sweep would then run privileged)."""
    import dataclasses
    if probe_image:
        return dataclasses.replace(step.undo, image=probe_image), ""
    if "journal" in step.sources:
        return step.undo, ""
    return None, ("planted through a privileged pod, known only from the in-cluster journal: "
                  "pass --probe-image to remove it")


def sweep_run(run_id: str, cluster: Cluster, journal: JournalFile | None,
              say: Callable[[str], None] = print, wait_gone_s: float = WAIT_GONE_S,
              poll_s: float = 0.5, probe_image: str | None = None) -> Outcome:
    """Remove everything run `run_id` left; say one line per thing removed."""
    outcome = Outcome()
    if journal is not None:
        outcome.left += [f"unreadable journal record ({p})" for p in journal.problems]
    kube = cluster.kube
    labelled, cluster_entries = [], []
    if kube is not None:
        labelled, failed = list_labelled(kube, f"{RUN_ID_LABEL}={run_id}")
        outcome.left += failed
        try:
            cluster_entries = read_cluster_journal(kube, run_namespace(run_id))
        except Exception as exc:  # noqa: BLE001 - named (a malformed entry: nothing it names runs)
            outcome.left.append(f"cluster journal of {run_namespace(run_id)}: {one_line(exc)}")
    steps = plan(run_id, journal, labelled, cluster_entries)
    for step in steps:
        if isinstance(step.undo, ObjectRef) and kube is None:
            outcome.left.append(f"{what(step.undo)} (no cluster: {cluster.error})")
            continue
        if step.terminating:
            continue   # already being deleted: waited for below
        undo = step.undo
        if isinstance(undo, PlantedFile) and undo.through_pod:
            undo, why = _through_pod(step, probe_image)
            if undo is None:
                outcome.left.append(f"{what(step.undo)}: {why}")
                continue
        try:
            removed = undo.apply(kube)
        except Exception as exc:  # noqa: BLE001 - named in the last line
            reason = one_line(exc)
            if isinstance(step.undo, PlantedFile):
                reason = f"no node access through {step.undo.node_access}: {reason}"
            outcome.left.append(f"{what(step.undo)}: {reason}")
            continue
        if removed:
            line = f"removed {what(step.undo)} (run {run_id})"
            outcome.removed.append(line)
            say(line)
        if journal is not None and step.seq is not None:
            append_event(journal.path, {"event": "undone", "seq": step.seq, "by": "sweep"})
    if kube is not None and not outcome.left:
        outcome.left += _wait_gone(kube, run_id, wait_gone_s, poll_s)
    if journal is not None and not outcome.left:
        append_event(journal.path, {"event": "swept"})
    return outcome


def _wait_gone(kube: Any, run_id: str, deadline_s: float, poll_s: float) -> list[str]:
    """Deleted objects can take a moment (a namespace empties first): wait, bounded, until
    the label finds none; what is still there at the deadline is named."""
    seen: dict[str, list] = {"found": [], "failed": []}

    def nothing_left() -> bool:
        found, failed = list_labelled(kube, f"{RUN_ID_LABEL}={run_id}")
        seen.update(found=found, failed=failed)
        if failed or not found:
            return True
        for ref, _run, terminating in found:
            if not terminating:   # made meanwhile (by a controller): delete it too
                try:
                    kube.delete_object(ref)
                except Exception:  # noqa: BLE001 - named at the deadline if it stays
                    pass
        return False
    try:
        wait_for(nothing_left, deadline_s, f"the objects of run {run_id} to be gone",
                 interval_s=poll_s)
    except WaitTimeout:
        return [f"{ref.kind} {ref.where} still there after {deadline_s:.0f}s"
                + (" (terminating)" if terminating else "")
                for ref, _run, terminating in seen["found"]]
    return seen["failed"]


# -- leftovers at a run's start -------------------------------------------------------------

def sweep_command(run_id: str, reports_dir: Path | None = None,
                  kubeconfig: Path | None = None, context: str | None = None) -> str:
    parts = ["kubeprobe", "sweep", "--run-id", run_id]
    if reports_dir is not None:
        parts += ["--reports-dir", str(reports_dir)]
    if kubeconfig is not None:
        parts += ["--kubeconfig", str(kubeconfig)]
    if context:
        parts += ["--context", context]
    return " ".join(parts)


def leftovers(kube: Any, reports_dir: Path, this_run: str, kubeconfig: Path | None = None,
              context: str | None = None) -> list[str]:
    """One line per earlier run that left something: labelled objects whose run id is not
    this run's, and local journals of runs that never finished. Nothing is deleted."""
    by_run: dict[str, list[str]] = {}
    if kube is not None:
        found, _failed = list_labelled(kube, RUN_ID_LABEL)   # a kind we cannot list: skipped
        for ref, run_id, terminating in found:
            # Being deleted is not left behind (the previous run's namespace still emptying).
            if run_id and run_id != this_run and not terminating:
                by_run.setdefault(run_id, []).append(f"{ref.kind} {ref.where}")
    unfinished = {j.run_id: j for j in journals(reports_dir)
                  if j.run_id != this_run and j.unfinished}
    lines = []
    for run_id in sorted(set(by_run) | set(unfinished)):
        objects = by_run.get(run_id, [])
        said = []
        if objects:
            shown = ", ".join(objects[:3]) + (f", and {len(objects) - 3} more"
                                               if len(objects) > 3 else "")
            said.append(f"{len(objects)} object(s) in the cluster: {shown}")
        journal = unfinished.get(run_id)
        if journal is not None:
            said.append(f"its journal has {len(journal.pending)} record(s) not undone"
                        + (", the run never finished" if journal.ended is None else ""))
        lines.append(f"kubeprobe: run {run_id} left something behind (or is still running): "
                     f"{'; '.join(said)}. Remove it with: "
                     + sweep_command(run_id, reports_dir if journal is not None else None,
                                     kubeconfig, context))
    return lines


# -- the command -----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubeprobe sweep",
        description="remove the objects and planted files that kubeprobe runs left behind")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="the run to sweep")
    which.add_argument("--all", action="store_true",
                       help="every run with a journal not finished or labelled objects "
                            "(also a run still in progress)")
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="the cluster (default: the one the run's journal names, else "
                             "$KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None)
    parser.add_argument("--probe-image", default=None,
                        help="the agent image for the privileged pod that removes files a run "
                             "planted through one (default: the image its local journal "
                             "names)")
    parser.add_argument("--reports-dir", type=Path, default=DEFAULT_REPORTS,
                        help="where the runs' journals are (<dir>/journal/<run-id>.jsonl)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    clusters: dict[tuple, Cluster] = {}

    def cluster_for(journal: JournalFile | None) -> Cluster:
        kubeconfig, context = args.kubeconfig, args.context
        if kubeconfig is None and journal is not None and journal.begin.get("kubeconfig"):
            recorded = Path(journal.begin["kubeconfig"])
            if recorded.is_file():
                kubeconfig, context = recorded, context or journal.begin.get("context")
        kubeconfig = kubeconfig or default_kubeconfig()
        key = (str(kubeconfig), context)
        if key not in clusters:
            clusters[key] = (connect(kubeconfig, context) if kubeconfig is not None else
                             Cluster(None, "no kubeconfig (pass --kubeconfig)"))
        return clusters[key]

    if args.run_id:
        path = journal_path(args.reports_dir, args.run_id)
        journal = read_journal(path) if path.is_file() else None
        runs = {args.run_id: journal}
        cluster = cluster_for(journal)
        if journal is None and cluster.kube is None:
            print(f"kubeprobe sweep: run {args.run_id}: no journal in {path.parent} and no "
                  f"cluster to look in ({cluster.error})", file=sys.stderr)
            return 2
    else:
        runs = {j.run_id: j for j in journals(args.reports_dir) if j.unfinished}
        for cluster in {id(c): c for c in [cluster_for(None)]
                        + [cluster_for(j) for j in runs.values()]}.values():
            if cluster.kube is not None:
                found, _ = list_labelled(cluster.kube, RUN_ID_LABEL)
                for _ref, run_id, _terminating in found:
                    if run_id:
                        runs.setdefault(run_id, None)
    left, removed = [], 0
    for run_id, journal in sorted(runs.items()):
        outcome = sweep_run(run_id, cluster_for(journal), journal,
                            probe_image=args.probe_image)
        removed += len(outcome.removed)
        left += [f"run {run_id}: {item}" for item in outcome.left]
    if left:
        shown = "; ".join(left[:6]) + (f"; and {len(left) - 6} more" if len(left) > 6 else "")
        print(f"kubeprobe sweep: could not remove everything: {shown}", file=sys.stderr)
        return 1
    print(f"kubeprobe sweep: nothing left of {', '.join(sorted(runs)) or 'any run'} "
          f"({removed} removed)")
    return 0
