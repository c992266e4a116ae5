"""Self-tests of the lab (kubeprobe.lab).

- The derived kubeadm configuration carries every setting of the matching kind config
  (pure unit test, runs everywhere).
- `up` refuses with one clear line when a control-plane port is taken (root).
- A full cycle per profile: up, smoke test, refusal of a second up, down, and nothing left
  behind (root + built binaries; about 30 s per profile).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import yaml

from kubeprobe.lab import build, cli, cluster, config, gotools, host

SETTINGS = config.LabSettings(
    k8s_version="v1.34.10", etcd_image_tag="3.6.5-0", node_name="node-a", node_ip="192.0.2.2",
    cri_socket="unix:///run/kubeprobe-lab/containerd.sock", etcd_data_dir=Path("/var/lib/kubeprobe-lab/etcd"),
    pod_logs_dir=Path("/var/lib/kubeprobe-lab/pod-logs"), skip_phases=cluster.SKIP_PHASES)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
needs_build = pytest.mark.skipif(build.read_stamp() is None,
                                 reason="lab binaries not built (run `kubeprobe lab build`)")


def _leaves(tree, prefix=()):
    """(path, value) for every scalar or list in a nested mapping."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, prefix + (key,))
    else:
        yield prefix, tree


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@pytest.mark.parametrize("profile", sorted(config.PROFILES))
def test_derived_kubeadm_config_carries_every_kind_patch(profile):
    docs = {d["kind"]: d for d in yaml.safe_load_all(config.render_kubeadm_config(profile, SETTINGS))}
    patches = config.kind_patches(config.load_kind_config(profile))
    assert patches, f"{profile}: the kind config has no kubeadmConfigPatches"
    for patch in patches:
        doc = docs[patch["kind"]]
        for path, value in _leaves({k: v for k, v in patch.items() if k not in ("kind", "apiVersion")}):
            assert _get(doc, path) == value, f"{profile}: {patch['kind']} {'.'.join(path)}"
    # The lab's own essentials survive the patches.
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "cgroupfs"
    assert docs["InitConfiguration"]["nodeRegistration"]["taints"] == []
    assert docs["InitConfiguration"]["localAPIEndpoint"]["advertiseAddress"] == SETTINGS.node_ip
    assert docs["ClusterConfiguration"]["kubernetesVersion"] == SETTINGS.k8s_version


def test_profiles_differ_where_the_weak_profile_weakens():
    hardened, weak = ({d["kind"]: d for d in config.kubeadm_documents(p, SETTINGS)} for p in ("hardened", "weak"))
    assert hardened["KubeletConfiguration"]["authorization"]["mode"] == "Webhook"
    assert weak["KubeletConfiguration"]["authorization"]["mode"] == "AlwaysAllow"
    assert hardened["KubeletConfiguration"]["readOnlyPort"] == 0
    assert weak["KubeletConfiguration"]["readOnlyPort"] == 10255
    assert "NodeRestriction" in hardened["ClusterConfiguration"]["apiServer"]["extraArgs"]["enable-admission-plugins"]
    assert "NodeRestriction" not in weak["ClusterConfiguration"]["apiServer"]["extraArgs"]["enable-admission-plugins"]


def test_extra_mounts_point_at_existing_files():
    mounts = config.kind_mounts(config.load_kind_config("hardened"))
    assert [str(m.node_path) for m in mounts] == ["/etc/kubernetes/audit/policy.yaml"]
    assert all(m.host_path.is_file() for m in mounts)


@pytest.mark.lab
@needs_root
def test_up_refuses_when_a_port_is_taken(capsys):
    if cluster.status() is not None and cluster.status().running:
        pytest.skip("a lab is running; the port check would not be reached")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", 6443))
        except OSError:
            pass  # already taken by something else: up must refuse all the same
        else:
            sock.listen()
        assert cli.main(["up", "--profile", "hardened"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "6443" in err[0], err


def _lab_processes(stamp: dict) -> list[int]:
    exes = {os.path.realpath(p) for p in (Path(stamp["k8s_bin"]).iterdir())}
    exes |= {os.path.realpath(stamp["etcd"]), os.path.realpath(stamp["pause"])}
    exes.add(os.path.realpath(gotools.REGISTRY.binary))  # the lab registry (lab/registry.py)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.path.realpath(entry / "exe") in exes:
                    found.append(int(entry.name))
            except OSError:
                pass
    found += host.pids_with_cmdline_arg(str(cluster.containerd_socket()))
    found += host.pids_with_cmdline_arg(str(cluster.LAB_DIR / "containerd.toml"))
    return [p for p in found if host.process_alive(p)]


def _veths() -> set[str]:
    return {l for l in os.listdir("/sys/class/net") if l.startswith("veth")}


@pytest.mark.lab
@needs_root
@needs_build
@pytest.mark.parametrize("profile, node_port", [("hardened", None), ("weak", True)])
def test_full_cycle_leaves_nothing_behind(profile, node_port):
    from kubeprobe.lab import smoke
    if cluster.status() is not None:
        pytest.skip("a lab is already running; not tearing it down from a test")
    netns_before = host.netns_names()
    veths_before = _veths()
    stamp = build.read_stamp()
    try:
        state = cluster.up(profile)
        assert state.running and state.kubeconfig.is_file() and state.node_ip
        with pytest.raises(cluster.LabError, match="already running"):
            cluster.up(profile)
        result = smoke.run_smoke(state)
        assert result.kubelet_port_reachable and result.cluster_ip_answers
        assert result.node_port_answers is node_port, result.notes
    finally:
        cluster.down()

    assert cluster.status() is None
    assert _lab_processes(stamp) == []
    assert host.mounts_under([cluster.LAB_DIR, cluster.RUN_DIR, cluster.KUBELET_DIR]) == []
    assert {n for n in host.netns_names() - netns_before if n.startswith("cni-")} == set()
    assert not host.link_exists(cluster.BRIDGE)
    assert _veths() - veths_before == set()
    for tool in host.iptables_commands():
        assert host.lab_chains(tool, ("KUBE-", "CNI-")) == {}, tool
    assert host.pids_in_cgroup_subtree(cluster.KUBEPODS_CGROUP) == set()
    assert not any((root / cluster.KUBEPODS_CGROUP).exists() for root in host.cgroup_roots())
    assert not cluster.KUBELET_DIR.exists() and not cluster.RUN_DIR.exists()
