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

from kubeprobe.lab import build, cli, cluster, config, host

def settings(version: str) -> config.LabSettings:
    return config.LabSettings(
        k8s_version=version, etcd_image_tag="3.6.8-0", node_name="node-a", node_ip="192.0.2.2",
        cri_socket="unix:///run/kubeprobe-lab/containerd.sock", etcd_data_dir=Path("/var/lib/kubeprobe-lab/etcd"),
        pod_logs_dir=Path("/var/lib/kubeprobe-lab/pod-logs"), skip_phases=cluster.SKIP_PHASES)


SETTINGS = settings(build.DEFAULT_VERSION)
VERSIONS = sorted(build.SUPPORTED.values())

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


def _args_read(tree, prefix=()):
    """The document with every extraArgs/kubeletExtraArgs list read back as a map."""
    if isinstance(tree, dict):
        return {k: (config.args_as_map(v) if k in ("extraArgs", "kubeletExtraArgs") else _args_read(v))
                for k, v in tree.items()}
    return tree


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("profile", sorted(config.PROFILES))
def test_derived_kubeadm_config_carries_every_kind_patch(profile, version):
    rendered = list(yaml.safe_load_all(config.render_kubeadm_config(profile, settings(version))))
    api = "kubeadm.k8s.io/v1beta4" if version >= "v1.36" else "kubeadm.k8s.io/v1beta3"
    assert {d["apiVersion"] for d in rendered if d["kind"].endswith("Configuration")
            and "kubeadm" in d["apiVersion"]} == {api}
    if api.endswith("v1beta4"):  # kubeadm 1.37 refuses the map form
        cluster_doc = next(d for d in rendered if d["kind"] == "ClusterConfiguration")
        assert isinstance(cluster_doc["apiServer"]["extraArgs"], list)
    docs = {d["kind"]: _args_read(d) for d in rendered}
    patches = config.kind_patches(config.load_kind_config(profile))
    assert patches, f"{profile}: the kind config has no kubeadmConfigPatches"
    for patch in patches:
        doc = docs[patch["kind"]]
        for path, value in _leaves({k: v for k, v in patch.items() if k not in ("kind", "apiVersion")}):
            got = _get(doc, path)
            if path[-1] == "certSANs":  # merged, as kind does
                assert set(value) <= set(got), f"{profile}: {'.'.join(path)}"
            else:
                assert got == value, f"{profile} {version}: {patch['kind']} {'.'.join(path)}"
    assert docs["KubeletConfiguration"]["failCgroupV1"] is False  # this host is cgroup v1
    # The lab's own essentials survive the patches.
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "cgroupfs"
    assert docs["InitConfiguration"]["nodeRegistration"]["taints"] == []
    assert docs["InitConfiguration"]["localAPIEndpoint"]["advertiseAddress"] == SETTINGS.node_ip
    assert docs["ClusterConfiguration"]["kubernetesVersion"] == version


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("profile", sorted(config.PROFILES))
def test_the_versions_own_kubeadm_accepts_the_rendered_config(profile, version, tmp_path):
    """`kubeadm config validate` of the very kubeadm the lab will run (when that version is built)."""
    stamp = build.read_stamp(version=version)
    if stamp is None:
        pytest.skip(f"Kubernetes {version} is not built (kubeprobe lab build --k8s-version {version})")
    path = tmp_path / "kubeadm.yaml"
    path.write_text(config.render_kubeadm_config(profile, settings(version)))
    done = host.run([str(Path(stamp["k8s_bin"]) / "kubeadm"), "config", "validate", "--config", str(path)],
                    check=False)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


def test_v1beta4_merge_follows_kinds_rules():
    """kind v0.33 pkg/internal/patch/kubeadm_merge.go: a version-less map patch merges into a
    v1beta4 list by name, null removes, certSANs append; a v1beta4 patch must use the list."""
    target = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
              "apiServer": {"extraArgs": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}],
                            "certSANs": ["x"]}}
    merged = config.kubeadm_merge(target, {"apiServer": {"extraArgs": {"a": "9", "b": None, "c": "3"},
                                                         "certSANs": ["x", "y"]}}, patch_has_version=False)
    assert merged["apiServer"]["extraArgs"] == [{"name": "a", "value": "9"}, {"name": "c", "value": "3"}]
    assert merged["apiServer"]["certSANs"] == ["x", "y"]
    assert target["apiServer"]["extraArgs"][1] == {"name": "b", "value": "2"}  # input untouched
    with pytest.raises(ValueError, match="map"):
        config.kubeadm_merge(target, {"apiServer": {"extraArgs": {"a": "1"}}}, patch_has_version=True)
    v1beta3 = dict(target, apiVersion="kubeadm.k8s.io/v1beta3", apiServer={"extraArgs": {"a": "1"}})
    assert config.kubeadm_merge(v1beta3, {"apiServer": {"extraArgs": {"b": "2"}}}, False)["apiServer"] == \
        {"extraArgs": {"a": "1", "b": "2"}}


def test_versions_resolve_to_pinned_patches_and_refuse_the_unsupported():
    assert build.resolve_version(None) == build.DEFAULT_VERSION == build.SUPPORTED[build.DEFAULT_MINOR]
    assert build.DEFAULT_MINOR == max(build.SUPPORTED, key=lambda m: int(m.split(".")[1]))
    assert build.resolve_version("1.36") == build.resolve_version("v1.36") == build.SUPPORTED["1.36"]
    assert build.resolve_version("v1.36.1") == "v1.36.1"
    for bad in ("1.34", "v1.34.10", "2.0", "latest", "1"):
        with pytest.raises(ValueError, match="supported minors are 1.35, 1.36, 1.37"):
            build.resolve_version(bad)
    assert build.default_paths("1.35").k8s_bin.parent.name == f"k8s-{build.SUPPORTED['1.35']}"


def test_etcd_version_comes_from_kubeadms_image_list_and_the_proxy():
    images = ["registry.k8s.io/kube-apiserver:v1.35.4", "registry.k8s.io/pause:3.10.1",
              "registry.k8s.io/etcd:3.6.6-0", "registry.k8s.io/coredns/coredns:v1.13.1"]
    assert build.etcd_version_from_images(images) == "v3.6.6"
    listed = "v3.6.0 v3.6.5 v3.6.8 v3.6.12 v3.7.0-rc.0 v3.7.0".split()
    assert build.pick_served_patch("v3.6.6", listed) == "v3.6.8"  # nearest newer patch
    assert build.pick_served_patch("v3.7.0", listed) == "v3.7.0"
    with pytest.raises(RuntimeError, match="no etcd v3.8.0"):
        build.pick_served_patch("v3.8.0", listed)
    with pytest.raises(RuntimeError, match="not <semver>-<n>"):
        build.etcd_version_from_images(["registry.k8s.io/etcd:latest"])


def test_profiles_differ_where_the_weak_profile_weakens():
    hardened, weak = ({d["kind"]: d for d in config.kubeadm_documents(p, SETTINGS)} for p in ("hardened", "weak"))
    assert hardened["KubeletConfiguration"]["authorization"]["mode"] == "Webhook"
    assert weak["KubeletConfiguration"]["authorization"]["mode"] == "AlwaysAllow"
    assert hardened["KubeletConfiguration"]["readOnlyPort"] == 0
    assert weak["KubeletConfiguration"]["readOnlyPort"] == 10255
    hardened_args, weak_args = (config.args_as_map(d["ClusterConfiguration"]["apiServer"]["extraArgs"])
                                for d in (hardened, weak))
    assert "NodeRestriction" in hardened_args["enable-admission-plugins"]
    assert "NodeRestriction" not in weak_args["enable-admission-plugins"]


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
