"""Crash safety on the real lab: the suite killed with SIGKILL (no cleanup can run), then
`kubeprobe sweep --run-id ID` leaves nothing.

The real suite runs in a subprocess against the hardened lab (brought up here, taken down at
the end; run it under the machine-wide lab lock). Each kill point is detected by polling the
cluster or the node's filesystem, never by sleeping:

1. namespace just created (NODERESTRICTION-02: its throwaway Node B exists already),
2. RUNTIME-06 waiting: its pod is Running (the next run must name run 1's leftovers),
3. a binary planted in the etcd container's root filesystem (RUNTIME-07/08/10/11),
4. a CSR approved (ETCD-04).

After each kill the sweep must exit 0 having removed what the point left, and then no object
labelled with the run id (any kind the suite creates, CSRs and Nodes included) and no planted
file may remain; a second sweep removes nothing. About 2-3 minutes with the lab.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubeprobe.journal import KINDS, RUN_ID_LABEL
from kubeprobe.lab import build, cluster
from kubeprobe.plant import ROOTFS_GLOBS
from kubeprobe.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
              pytest.mark.skipif(build.read_stamp() is None,
                                 reason="lab binaries not built (run `kubeprobe lab build`)")]
ATTEMPTS = 3   # a point that passed before the kill landed is tried again with a new run


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


class KilledRun:
    """The suite in a subprocess, killed with SIGKILL as soon as `reached()` holds."""

    def __init__(self, reports: Path, run_id: str, controls: str) -> None:
        self.run_id, self.log = run_id, reports.parent / f"{run_id}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "suites/", "--target", "lab", "--cluster-profile",
             "hardened", "--controls", controls, "--run-id", run_id, "--reports-dir",
             str(reports), "-q", "-p", "no:randomly"],
            cwd=REPO, env=_env(), stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def kill_when(self, reached, what: str, deadline_s: float, interval_s: float):
        def check():
            if self.proc.poll() is not None:
                return "ended"
            return reached()
        try:
            found = wait_for(check, deadline_s, what, interval_s=interval_s)
        finally:
            self.proc.kill()        # SIGKILL: no handler, no cleanup, no journal end
            self.proc.wait(timeout=30)
        assert found != "ended", f"the run ended before {what}:\n{self.output}"
        return found

    @property
    def output(self) -> str:
        return self.log.read_text()


def sweep(reports: Path, run_id: str) -> tuple[int, list[str], str]:
    done = subprocess.run([sys.executable, "-m", "kubeprobe.cli", "sweep", "--run-id", run_id,
                           "--reports-dir", str(reports)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=180)
    removed = [line for line in done.stdout.splitlines() if line.startswith("removed ")]
    return done.returncode, removed, done.stdout + done.stderr


def labelled(kube, run_id: str) -> list[str]:
    found = []
    for kind in KINDS:
        found += [f"{ref.kind} {ref.where}" for ref, _, _ in
                  kube.list_labelled(kind, f"{RUN_ID_LABEL}={run_id}")]
    return found


def planted_files() -> list[str]:
    return sorted(p for g in ROOTFS_GLOBS for p in glob.glob(g.format(id="*") + "/tmp/kubeprobe-*"))


def etcd_tmp(kube) -> Path:
    pod = kube.core.list_namespaced_pod("kube-system", label_selector="component=etcd").items[0]
    cid = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    roots = [p for g in ROOTFS_GLOBS for p in glob.glob(g.format(id=cid))]
    assert len(roots) == 1, roots
    return Path(roots[0]) / "tmp"


def test_sigkill_at_four_points_then_sweep_leaves_nothing(tmp_path):
    from kubeprobe.agent import build_agent, build_agent_image
    from kubeprobe.kube import Kube
    if cluster.status() is not None:
        pytest.skip("a lab is already running; not tearing it down from a test")
    reports = tmp_path / "reports"
    started = time.monotonic()
    timings = {}
    for _ in range(2):   # leftovers of an earlier lab, no process alive: `down` may need two
        if not cluster.state_path().exists():
            break
        try:
            cluster.down(log=lambda m: None)
        except cluster.LabError:
            pass
    state = cluster.up("hardened", extra_images=[build_agent_image()], log=lambda m: None)
    try:
        timings["lab up"] = time.monotonic() - started
        kube = Kube.connect(state.kubeconfig, None)
        agent_size = build_agent().stat().st_size
        swept = {}

        def point(name, controls, reached, artefact, interval_s=0.05, deadline_s=120):
            """Kill a fresh run at `name`; retry if what it left is already gone."""
            for attempt in range(ATTEMPTS):
                run_id = f"crash{len(timings)}{attempt}-{os.urandom(3).hex()}"
                t0 = time.monotonic()
                run = KilledRun(reports, run_id, controls)
                run.kill_when(lambda: reached(run_id), name, deadline_s, interval_s)
                timings[name] = time.monotonic() - t0
                if artefact(run_id):
                    return run
                swept[run_id] = sweep(reports, run_id)   # missed: clean it, try again
            pytest.fail(f"{name}: the kill never landed before the run's own cleanup")

        def namespace_of(run_id):
            return [n for n in kube.core.list_namespace(
                label_selector=f"{RUN_ID_LABEL}={run_id}").items
                if n.metadata.name == f"kubeprobe-{run_id}"]

        def nodes_of(run_id):
            return kube.core.list_node(label_selector=f"{RUN_ID_LABEL}={run_id}").items

        # 1. The namespace was just created (NODERESTRICTION-02: node B came first).
        first = point("namespace just created", "NODERESTRICTION-02", namespace_of,
                      lambda run_id: namespace_of(run_id) and nodes_of(run_id), 0.02)

        # 2. RUNTIME-06 waits: its pod is Running. This run starts by naming run 1's leftovers.
        def secret_reader_running(run_id):
            return [p for p in kube.core.list_pod_for_all_namespaces(
                label_selector=f"{RUN_ID_LABEL}={run_id}").items
                if p.metadata.name.startswith("kp-secret-read") and p.status.phase == "Running"]
        second = point("RUNTIME-06 waiting", "RUNTIME-06", secret_reader_running,
                       secret_reader_running, 0.2)
        assert f"kubeprobe sweep --run-id {first.run_id} --reports-dir {reports}" in second.output

        # 3. A binary is planted in the etcd container (watched on the node's filesystem).
        tmp = etcd_tmp(kube)

        def binary_planted(_run_id):
            found = []
            for directory in tmp.glob("kubeprobe-*"):
                try:   # the run's own cleanup may remove it while we look
                    found += [f for f in directory.iterdir() if f.stat().st_size == agent_size]
                except OSError:
                    pass
            return found
        third = point("binary planted in etcd", "RUNTIME-07,RUNTIME-08,RUNTIME-10,RUNTIME-11",
                      binary_planted, binary_planted, 0.002)

        # 4. ETCD-04's CSR was approved.
        def csr_approved(run_id):
            return [c for c in kube.certificates.list_certificate_signing_request(
                label_selector=f"{RUN_ID_LABEL}={run_id}").items
                if any(x.type == "Approved" for x in (c.status.conditions or []))]
        fourth = point("CSR approved", "ETCD-04", csr_approved, csr_approved, 0.02)

        expected = {first: [f"Namespace kubeprobe-{first.run_id}", "Node kp-node-"],
                    second: [f"Namespace kubeprobe-{second.run_id}", "Pod kubeprobe-"],
                    third: ["planted file /tmp/kubeprobe-", "in etcd-"],
                    fourth: ["CertificateSigningRequest kp-csr-"]}
        for run, phrases in expected.items():
            t0 = time.monotonic()
            code, removed, output = sweep(reports, run.run_id)
            timings[f"sweep {run.run_id}"] = time.monotonic() - t0
            assert code == 0, output
            for phrase in phrases:
                assert any(phrase in line for line in removed), (phrase, output)
            swept[run.run_id] = (code, removed, output)
        for run_id in swept:
            assert labelled(kube, run_id) == [], run_id
            assert swept[run_id][0] == 0, swept[run_id][2]
            code, removed, output = sweep(reports, run_id)       # idempotent
            assert code == 0 and removed == [], output
        assert planted_files() == []
        assert [c.metadata.name for c in kube.certificates.list_certificate_signing_request(
            label_selector=RUN_ID_LABEL).items] == []
        assert [n.metadata.name for n in kube.core.list_node(
            label_selector=RUN_ID_LABEL).items] == []
    finally:
        cluster.down(log=lambda m: None)
    timings["total"] = time.monotonic() - started
    print("\ncrash-safety timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    for run_id, (_, removed, _) in swept.items():
        print(f"  sweep {run_id}: " + "; ".join(removed))

