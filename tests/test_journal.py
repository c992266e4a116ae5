"""Crash-safe cleanup (kubeprobe.journal, kubeprobe.sweep, kubeprobe.interrupts).

- The journal format: what is written before a creation, read back; a torn last line (a run
  killed mid-write) and records that name something kubeprobe never creates are refused.
- Sweep planning (pure): journal, label and cluster journal merged, each thing once, in
  deletion order; a sweep against a fake API (named so: it only keeps a dict of objects)
  removes, strikes out, and removes nothing the second time; planted files for real on a
  containerd-shaped directory here (local://), and named when there is no node access.
- Leftovers: what a run names at its start, with the sweep command.
- SIGTERM/SIGINT against a real run (the suite in a subprocess, against the TLS stand-in API
  server): the control's cleanup and the run's ran before the exit line; a signal that comes
  during a cleanup waits for it.
The lab proof (SIGKILL at four points, then `kubeprobe sweep`) is tests/test_crash_lab.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes.client.rest import ApiException

from kubeprobe import sweep
from kubeprobe.journal import (KINDS, Journal, JournalError, ObjectRef, PlantedFile,
                               journal_path, read_journal, undo_from_json)
from kubeprobe.waiting import wait_for
from tests.standin_apiserver import StandInApiServer
from tests.test_bad_input import CATALOG, REPO

RUN = "1201010199aabb"
CID = "ab" * 32
ROOTFS = f"/run/kubeprobe-lab/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs"


def planted(path=ROOTFS + "/tmp/kubeprobe-0a1b2c3d", access="local://", cid=CID):
    return PlantedFile("node-a", access, cid, path, "etcd-node-a", "etcd")


def through_pod(image="kubeprobe.local/agent@sha256:" + "0" * 64):
    return PlantedFile("node-a", "pod://node-a", CID, ROOTFS + "/tmp/kubeprobe-0a1b2c3d",
                       "etcd-node-a", "etcd", image, "falco", RUN)


# ---------------------------------------------------------------- the journal format

def test_journal_records_each_creation_before_it_and_reads_back(tmp_path):
    journal = Journal.start(tmp_path, RUN, kubeconfig=Path("/k/admin.conf"), context=None,
                            target="lab")
    pod = ObjectRef("v1", "Pod", f"kubeprobe-{RUN}", "kp-pod-1")
    first = journal.intend(pod, "RUNTIME-06")
    # On disk at once (written and fsync'd before the creation it announces).
    lines = journal_path(tmp_path, RUN).read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["begin", "intent"]
    assert json.loads(lines[1])["undo"] == {"type": "object", "apiVersion": "v1", "kind": "Pod",
                                            "namespace": f"kubeprobe-{RUN}",
                                            "name": "kp-pod-1"}
    second = journal.intend(planted(), "RUNTIME-07")
    journal.undone(first)
    assert [e.seq for e in journal.pending] == [second.seq]
    journal.end()

    back = read_journal(journal_path(tmp_path, RUN))
    assert back.run_id == RUN and back.begin["kubeconfig"] == "/k/admin.conf"
    assert back.begin["target"] == "lab" and back.begin["pid"] == os.getpid()
    assert back.entries[1].undo == pod and back.entries[1].control == "RUNTIME-06"
    assert back.entries[2].undo == planted()
    assert [e.seq for e in back.pending] == [2] and back.ended["left"] == [2]
    assert back.unfinished  # it ended, but left a record not undone
    for line in journal_path(tmp_path, RUN).read_text().splitlines():
        record = json.loads(line)
        assert record["v"] == 1 and record["at"].endswith("+00:00")


def test_killed_run_torn_line_and_foreign_records_are_not_acted_on(tmp_path):
    journal = Journal.start(tmp_path, RUN)
    journal.intend(ObjectRef("v1", "Namespace", None, f"kubeprobe-{RUN}"), "run")
    path = journal_path(tmp_path, RUN)
    with path.open("a") as out:
        out.write(json.dumps({"v": 1, "event": "intent", "seq": 7, "control": "X",
                              "undo": {"type": "file", "node": "n", "nodeAccess": "local://",
                                       "containerId": CID, "path": "/"}}) + "\n")
        out.write('{"v": 1, "event": "intent", "seq": 8, "und')   # SIGKILL mid-write
    back = read_journal(path)
    assert back.ended is None and back.unfinished and back.torn
    assert [e.undo.name for e in back.pending] == [f"kubeprobe-{RUN}"]
    assert len(back.problems) == 1 and "not a path kubeprobe plants" in back.problems[0]


@pytest.mark.parametrize("record, why", [
    ({"type": "file", "node": "n", "nodeAccess": "local://", "containerId": CID,
      "path": ROOTFS + "/etc"}, "not a path kubeprobe plants"),
    ({"type": "file", "node": "n", "nodeAccess": "local://", "containerId": CID,
      "path": ROOTFS + "/tmp/kubeprobe-0a1b2c3d/../../.."}, "not a path kubeprobe plants"),
    ({"type": "file", "node": "n", "nodeAccess": "ssh://n; rm -rf /", "containerId": CID,
      "path": ROOTFS + "/tmp/kubeprobe-0a1b2c3d"}, "is not local://, docker://<node> or pod://"),
    ({"type": "file", "node": "n", "nodeAccess": "pod://n", "containerId": CID,
      "path": ROOTFS + "/tmp/kubeprobe-0a1b2c3d", "image": "evil; rm -rf /",
      "podNamespace": "kube-system"}, "through a pod: image"),
    ({"type": "file", "node": "n", "nodeAccess": "pod://n", "containerId": CID,
      "path": ROOTFS + "/tmp/kubeprobe-0a1b2c3d", "podNamespace": "kube-system"},
     "through a pod: image"),
    ({"type": "file", "node": "n", "nodeAccess": "local://", "containerId": "cd" * 32,
      "path": ROOTFS + "/tmp/kubeprobe-0a1b2c3d"}, "not a path kubeprobe plants"),
    ({"type": "object", "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "namespace": "a", "name": "b"},
     "not a kind kubeprobe creates"),
    ({"type": "object", "apiVersion": "v1", "kind": "Node", "namespace": "a", "name": "b"},
     "cluster-scoped"),
    ({"type": "object", "apiVersion": "v1", "kind": "Pod", "namespace": "a", "name": "B/../c"},
     "not a valid name"),
    ({"type": "shell", "command": "rm -rf /"}, "unknown type"),
])
def test_records_that_kubeprobe_never_writes_are_refused(record, why):
    with pytest.raises(JournalError, match=why):
        undo_from_json(record)


def test_every_record_round_trips_and_describes_itself():
    for undo in (ObjectRef("apps/v1", "Deployment", "ns", "d"), ObjectRef("v1", "Node", None, "n"),
                 ObjectRef("certificates.k8s.io/v1", "CertificateSigningRequest", None, "c"),
                 planted(access="docker://kind-control-plane"), through_pod()):
        assert undo_from_json(json.loads(json.dumps(undo.to_json()))) == undo
    assert planted().inside == "/tmp/kubeprobe-0a1b2c3d"
    assert planted().describe() == ("remove /tmp/kubeprobe-0a1b2c3d from etcd-node-a/etcd on "
                                    "node node-a (local://)")
    assert ObjectRef("v1", "Pod", "ns", "p").describe() == "delete Pod ns/p"


# ---------------------------------------------------------------- sweep planning

def test_plan_merges_every_source_once_in_deletion_order(tmp_path):
    journal = Journal.start(tmp_path, RUN)
    ns = ObjectRef("v1", "Namespace", None, f"kubeprobe-{RUN}")
    pod = ObjectRef("v1", "Pod", f"kubeprobe-{RUN}", "kp-a")
    csr = ObjectRef("certificates.k8s.io/v1", "CertificateSigningRequest", None, "kp-csr")
    for undo in (ns, pod, csr, planted()):
        journal.intend(undo, "X")
    node = ObjectRef("v1", "Node", None, "kp-node")
    deploy = ObjectRef("apps/v1", "Deployment", f"kubeprobe-{RUN}", "kp-d")
    labelled = [(pod, RUN, False), (node, RUN, False), (deploy, RUN, True),
                (ObjectRef("v1", "Pod", "other", "not-ours"), "another-run", False)]
    later_file = planted(ROOTFS + "/tmp/kubeprobe-99999999")
    steps = sweep.plan(RUN, read_journal(journal.path), labelled,
                       [("RUNTIME-07", planted()), ("RUNTIME-08", later_file)])
    assert [sweep.what(s.undo).split(" (")[0] for s in steps] == [
        "planted file /tmp/kubeprobe-0a1b2c3d in etcd-node-a/etcd on node node-a",
        "planted file /tmp/kubeprobe-99999999 in etcd-node-a/etcd on node node-a",
        f"Deployment kubeprobe-{RUN}/kp-d", f"Pod kubeprobe-{RUN}/kp-a",
        f"Namespace kubeprobe-{RUN}", "Node kp-node", "CertificateSigningRequest kp-csr"]
    by_what = {sweep.what(s.undo): s for s in steps}
    assert by_what[f"Pod kubeprobe-{RUN}/kp-a"].sources == ["journal", "label"]
    assert by_what[sweep.what(planted())].sources == ["journal", "cluster journal"]
    assert by_what[sweep.what(planted())].seq == 4
    assert by_what[f"Deployment kubeprobe-{RUN}/kp-d"].terminating
    assert list(KINDS)[-3:] == ["Namespace", "Node", "CertificateSigningRequest"]


class FakeKubeObjects:
    """A fake API (no cluster in these unit tests): a dict of labelled objects, deleted and
    listed the way kubeprobe.kube.Kube does it. The lab test does the same for real."""
    timeout = (1.0, 1.0)

    def __init__(self, objects=(), cluster_journal=None, terminating=()):
        self.objects = {ref: run for ref, run in objects}
        self.terminating = set(terminating)
        self.deleted = []
        data = {f"e{i:05d}": json.dumps({"control": "RUNTIME-07", "undo": u.to_json()})
                for i, u in enumerate(cluster_journal or [], 1)}
        self.core = SimpleNamespace(read_namespaced_config_map=self._read_config_map)
        self._journal_data = data

    def _read_config_map(self, name, namespace, **_):
        if not self._journal_data or namespace != f"kubeprobe-{RUN}":
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=self._journal_data)

    def delete_object(self, ref):
        self.deleted.append(ref)
        if ref.kind == "Namespace":   # its contents go with it
            for other in [r for r in self.objects if r.namespace == ref.name]:
                self.objects.pop(other)
            self._journal_data = {}
        return self.objects.pop(ref, None) is not None

    def list_labelled(self, kind, selector):
        key, _, value = selector.partition("=")
        return [(ref, run, ref in self.terminating) for ref, run in self.objects.items()
                if ref.kind == kind and run and (not value or run == value)]


@pytest.fixture
def rootfs():
    """A containerd-shaped task directory on this machine (as the lab has it, local://)."""
    cid = uuid.uuid4().hex * 2
    state = Path(f"/run/kubeprobe-selftest-{cid[:8]}")
    root = state / "containerd/io.containerd.runtime.v2.task/k8s.io" / cid / "rootfs"
    (root / "tmp").mkdir(parents=True)
    try:
        yield cid, root
    finally:
        shutil.rmtree(state)


def test_sweep_removes_everything_once_and_is_idempotent(tmp_path, rootfs):
    cid, root = rootfs
    (root / "tmp/kubeprobe-0a1b2c3d").mkdir()
    (root / "tmp/kubeprobe-0a1b2c3d/useradd").write_bytes(b"agent")
    file = planted(str(root / "tmp/kubeprobe-0a1b2c3d"), cid=cid)
    ns = ObjectRef("v1", "Namespace", None, f"kubeprobe-{RUN}")
    pod = ObjectRef("v1", "Pod", f"kubeprobe-{RUN}", "kp-a")
    node = ObjectRef("v1", "Node", None, "kp-node")
    journal = Journal.start(tmp_path, RUN)
    for undo in (ns, pod, file):
        journal.intend(undo, "X")       # then SIGKILL: no undone, no end
    kube = FakeKubeObjects([(ns, RUN), (pod, RUN), (node, RUN),
                            (ObjectRef("v1", "Node", None, "someone-elses"), "other")])
    said = []
    outcome = sweep.sweep_run(RUN, sweep.Cluster(kube), read_journal(journal.path), said.append,
                              wait_gone_s=2, poll_s=0.05)
    assert outcome.left == []
    assert said == [f"removed {sweep.what(file)} (run {RUN})",
                    f"removed Pod kubeprobe-{RUN}/kp-a (run {RUN})",
                    f"removed Namespace kubeprobe-{RUN} (run {RUN})",
                    f"removed Node kp-node (run {RUN})"]
    assert not (root / "tmp/kubeprobe-0a1b2c3d").exists() and (root / "tmp").is_dir()
    assert [r.name for r in kube.objects] == ["someone-elses"]
    back = read_journal(journal.path)
    assert back.pending == [] and back.swept and not back.unfinished

    said.clear()
    again = sweep.sweep_run(RUN, sweep.Cluster(kube), read_journal(journal.path), said.append,
                            wait_gone_s=2, poll_s=0.05)
    assert again.left == [] and said == []


def test_planted_file_known_only_to_the_cluster_journal_is_removed(rootfs):
    cid, root = rootfs
    (root / "tmp/kubeprobe-0a1b2c3d").mkdir()
    file = planted(str(root / "tmp/kubeprobe-0a1b2c3d"), cid=cid)
    ns = ObjectRef("v1", "Namespace", None, f"kubeprobe-{RUN}")
    kube = FakeKubeObjects([(ns, RUN)], cluster_journal=[file])
    said = []
    outcome = sweep.sweep_run(RUN, sweep.Cluster(kube), None, said.append, wait_gone_s=2,
                              poll_s=0.05)
    assert outcome.left == [] and not (root / "tmp/kubeprobe-0a1b2c3d").exists()
    assert said[0].startswith("removed planted file /tmp/kubeprobe-0a1b2c3d")


def test_without_node_access_the_planted_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no docker here
    journal = Journal.start(tmp_path, RUN)
    journal.intend(planted(access="docker://kind-control-plane"), "RUNTIME-07")
    outcome = sweep.sweep_run(RUN, sweep.Cluster(None, "no kubeconfig"),
                              read_journal(journal.path), lambda line: None)
    assert outcome.left == [f"{sweep.what(planted(access='docker://kind-control-plane'))}: "
                            "no node access through docker://kind-control-plane: "
                            "RuntimeError: no node access through "
                            "docker://kind-control-plane: docker is not installed"]
    assert read_journal(journal.path).unfinished


def test_sweep_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sweep.main(["--run-id", RUN, "--reports-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run {RUN}: no journal in" in err[0]

    journal = Journal.start(tmp_path, RUN)
    journal.intend(ObjectRef("v1", "Pod", "ns", "kp-a"), "X")
    assert sweep.main(["--run-id", RUN, "--reports-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kubeprobe sweep: could not remove everything: run {RUN}: Pod ns/kp-a (no "
                   "cluster: no kubeconfig (pass --kubeconfig))"]
    with pytest.raises(SystemExit):
        sweep.main(["--run-id", RUN, "--all"])


# ---------------------------------------------------------------- leftovers at the start

def test_a_run_names_what_earlier_runs_left_with_the_sweep_command(tmp_path):
    killed = Journal.start(tmp_path, "killed01")
    killed.intend(ObjectRef("v1", "Namespace", None, "kubeprobe-killed01"), "run")
    finished = Journal.start(tmp_path, "finished01")
    finished.undone(finished.intend(ObjectRef("v1", "Node", None, "kp-n"), "X"))
    finished.end()
    Journal.start(tmp_path, "current01")
    emptying = ObjectRef("v1", "Namespace", None, "kubeprobe-finished01")   # being deleted
    kube = FakeKubeObjects([(ObjectRef("v1", "Namespace", None, "kubeprobe-killed01"), "killed01"),
                            (ObjectRef("v1", "Node", None, "kp-node-x"), "labelled01"),
                            (ObjectRef("v1", "Pod", "kubeprobe-current01", "kp-p"), "current01"),
                            (emptying, "finished01")], terminating=[emptying])
    lines = sweep.leftovers(kube, tmp_path, "current01", Path("/k/conf"), "ctx")
    assert lines == [
        "kubeprobe: run killed01 left something behind (or is still running): 1 object(s) in "
        "the cluster: Namespace kubeprobe-killed01; its journal has 1 record(s) not undone, "
        f"the run never finished. Remove it with: kubeprobe sweep --run-id killed01 "
        f"--reports-dir {tmp_path} --kubeconfig /k/conf --context ctx",
        "kubeprobe: run labelled01 left something behind (or is still running): 1 object(s) "
        "in the cluster: Node kp-node-x. Remove it with: kubeprobe sweep --run-id labelled01 "
        "--kubeconfig /k/conf --context ctx"]
    assert kube.deleted == []   # named, never deleted


# ---------------------------------------------------------------- SIGTERM / SIGINT

INTERRUPTIBLE = '''
import os
import signal
from pathlib import Path

from kubernetes import client
from kubeprobe.journal import ObjectRef
from kubeprobe.outcome import Observation
from kubeprobe.waiting import wait_for

TARGETS = "apiserver"


def run(ctx, target, signal_in_cleanup=False, busy=True):
    ctx.defer_undo(ObjectRef("v1", "ConfigMap", "default", "kp-standin"))
    ctx.kube.core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="kp-standin",
                                                                   labels=ctx.labels)),
        _request_timeout=ctx.kube.timeout)
    if signal_in_cleanup:
        marker = Path(os.environ["KUBEPROBE_TEST_MARKER"])
        ctx.defer("a cleanup that gets SIGTERM halfway", lambda: (
            os.kill(os.getpid(), signal.SIGTERM), marker.write_text("finished")))
        return Observation.succeeded("created the ConfigMap")
    if not busy:
        return Observation.succeeded("created the ConfigMap")
    wait_for(lambda: False, 60, "a signal")   # the attack is busy when the signal comes
    return Observation.succeeded("not reached")
'''


def _interruptible_run(tmp_path: Path, api: StandInApiServer, extra: str = ""):
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "interruptible.py").write_text(INTERRUPTIBLE)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG.format(attack="interruptible", expected="BLOCKED", extra=extra))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", str(REPO / "suites"), "-q", "--run-id", "sigtest01",
         "--reports-dir", str(tmp_path / "reports"), "--kubeconfig", str(api.kubeconfig(tmp_path)),
         "--catalog", str(catalog)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
                        "KUBEPROBE_TEST_MARKER": str(tmp_path / "marker")})


def _deleted(api: StandInApiServer) -> list[str]:
    return [path.split("?")[0] for method, path in api.requests if method == "DELETE"]


def _kubeprobe_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("kubeprobe: ")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_runs_the_cleanups_before_the_exit(tmp_path, signum):
    with StandInApiServer() as api:
        run = _interruptible_run(tmp_path, api)
        try:
            wait_for(lambda: ("POST", "/api/v1/namespaces/default/configmaps") in api.requests,
                     30, "the attack's ConfigMap")
            started = time.monotonic()
            run.send_signal(signum)
            output, _ = run.communicate(timeout=30)
        finally:
            run.kill()
    assert time.monotonic() - started < 10
    assert run.returncode == 2, output
    assert _deleted(api) == ["/api/v1/namespaces/default/configmaps/kp-standin"]
    name = signal.Signals(signum).name
    assert _kubeprobe_lines(output) == [f"kubeprobe: interrupted by {name} during STANDIN-01; "
                                        "the run's cleanups ran first; nothing is left"], output
    journal = read_journal(journal_path(tmp_path / "reports", "sigtest01"))
    assert journal.ended["interrupted"] == name and not journal.unfinished


def test_a_signal_during_a_cleanup_waits_for_the_cleanups(tmp_path):
    with StandInApiServer() as api:
        run = _interruptible_run(tmp_path, api, extra="  params: {signal_in_cleanup: true}\n")
        output, _ = run.communicate(timeout=60)
    assert (tmp_path / "marker").read_text() == "finished"   # the cleanup was not cut short
    assert _deleted(api) == ["/api/v1/namespaces/default/configmaps/kp-standin"]
    assert run.returncode == 2, output
    assert _kubeprobe_lines(output) == ["kubeprobe: SIGTERM: stopping once the current step is "
                                        "done", "kubeprobe: interrupted by SIGTERM during "
                                        "STANDIN-01; the run's cleanups ran first; nothing is "
                                        "left"], output


def test_api_server_gone_before_the_cleanup_names_the_sweep_command(tmp_path):
    with StandInApiServer(stop_on=lambda method, path, _: method == "DELETE") as api:
        run = _interruptible_run(tmp_path, api, extra="  params: {busy: false}\n")
        output, _ = run.communicate(timeout=60)
    assert run.returncode == 2, output
    line, = _kubeprobe_lines(output.replace("! _pytest.outcomes.Exit: ", ""))
    assert ("cleanup not done, objects may be left in the cluster: delete ConfigMap "
            "default/kp-standin") in line, line
    # The sweep command comes last, ready to copy.
    assert line.endswith(f"; once it answers again, remove what is left with: kubeprobe sweep "
                         f"--run-id sigtest01 --reports-dir {tmp_path / 'reports'} !"), line
    journal = read_journal(journal_path(tmp_path / "reports", "sigtest01"))
    assert [e.undo.name for e in journal.pending] == ["kp-standin"] and journal.unfinished


def test_sweep_all_takes_every_unfinished_journal_and_every_labelled_run(tmp_path, monkeypatch,
                                                                         capsys):
    killed = Journal.start(tmp_path, "killed01")
    killed.intend(ObjectRef("v1", "Node", None, "kp-node-k"), "NODERESTRICTION-01")
    done = Journal.start(tmp_path, "finished01")
    done.end()
    kube = FakeKubeObjects([(ObjectRef("v1", "Node", None, "kp-node-k"), "killed01"),
                            (ObjectRef("v1", "Node", None, "kp-node-l"), "lostjournal01"),
                            (ObjectRef("v1", "Node", None, "a-real-node"), None)])   # unlabelled
    monkeypatch.setattr(sweep, "connect", lambda kubeconfig, context: sweep.Cluster(kube))
    monkeypatch.setattr(sweep, "WAIT_GONE_S", 1.0)
    argv = ["--all", "--reports-dir", str(tmp_path), "--kubeconfig", str(tmp_path / "k")]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["removed Node kp-node-k (run killed01)",
                       "removed Node kp-node-l (run lostjournal01)"]
    assert out[-1].startswith("kubeprobe sweep: nothing left of killed01, lostjournal01")
    assert [r.name for r in kube.objects] == ["a-real-node"]
    assert sweep.main(argv) == 0
    assert capsys.readouterr().out == "kubeprobe sweep: nothing left of any run (0 removed)\n"


# ---------------------------------------------------------------- node access through a pod

def test_node_access_pod_is_privileged_host_pid_on_that_node_and_labelled():
    from kubeprobe.nodepod import manifest
    body = manifest("kp-node-x", "node-a", "img@sha256:" + "1" * 64, RUN, ["sleep"])
    spec, container = body["spec"], body["spec"]["containers"][0]
    assert spec["nodeName"] == "node-a" and spec["hostPID"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]      # control-plane taints too
    assert container["securityContext"] == {"privileged": True, "runAsUser": 0}
    assert body["metadata"]["labels"]["kubeprobe.io/run-id"] == RUN   # the sweep finds it
    assert spec["automountServiceAccountToken"] is False


def test_file_planted_through_a_pod_is_removed_by_a_pod_with_a_trusted_image(tmp_path,
                                                                             monkeypatch):
    from kubeprobe import nodepod
    started = []

    def run_once(kube, access, node, run_id, args, deadline_s=60):
        started.append((access.namespace, access.image, node, run_id, args))
        return "removed\n"
    monkeypatch.setattr(nodepod, "run_once", run_once)
    ns = ObjectRef("v1", "Namespace", None, f"kubeprobe-{RUN}")
    file = through_pod()
    # Known only from the in-cluster journal: its image is not trusted without --probe-image.
    kube = FakeKubeObjects([(ns, RUN)], cluster_journal=[through_pod(image="evil.example/x:1")])
    outcome = sweep.sweep_run(RUN, sweep.Cluster(kube), None, lambda line: None, wait_gone_s=2,
                              poll_s=0.05)
    assert started == [] and len(outcome.left) == 1
    assert "pass --probe-image to remove it" in outcome.left[0]
    # The local journal's image, or --probe-image over any other.
    journal = Journal.start(tmp_path, RUN)
    journal.intend(file, "RUNTIME-07")
    kube = FakeKubeObjects([(ns, RUN)], cluster_journal=[through_pod(image="evil.example/x:1")])
    outcome = sweep.sweep_run(RUN, sweep.Cluster(kube), read_journal(journal.path),
                              lambda line: None, wait_gone_s=2, poll_s=0.05)
    assert outcome.left == [] and started == [("falco", file.image, "node-a", RUN,
                                               ["node-unplant", file.path])]
    started.clear()
    kube = FakeKubeObjects([(ns, RUN)], cluster_journal=[through_pod(image="evil.example/x:1")])
    sweep.sweep_run(RUN, sweep.Cluster(kube), None, lambda line: None, wait_gone_s=2,
                    poll_s=0.05, probe_image="reg.example/agent@sha256:" + "2" * 64)
    assert [s[1] for s in started] == ["reg.example/agent@sha256:" + "2" * 64]


def test_without_node_access_planting_says_how_to_get_it():
    from kubeprobe.context import Unavailable
    from kubeprobe.plant import plant
    ctx = SimpleNamespace(node_host=None, node_pod=None)
    with pytest.raises(Unavailable, match="--intrusive with a --probe-image"):
        plant(ctx, SimpleNamespace(), "etcd", None, "useradd")
