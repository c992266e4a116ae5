"""The kind path's own parts: configs per node, the node image's manifests, the engine probe.

The real thing (create, attack, delete) is `pytest suites/ --target kind` in .ci/run, judged by
the negative control; these check what that run relies on, against real inputs.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from kubeprobe import targets
from kubeprobe.kind import engine, nodeimage, tools


def test_workers_get_the_control_planes_kubelet_flags():
    config = targets.kind_config_for("weak", workers=2)
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    for worker in config["nodes"][1:]:
        assert worker["image"] == config["nodes"][0]["image"]
        docs = [yaml.safe_load(p) for p in worker["kubeadmConfigPatches"]]
        assert docs == [{"kind": "JoinConfiguration",
                         "nodeRegistration": {"kubeletExtraArgs": {"client-ca-file": ""}}}]


def test_hardened_workers_have_no_join_patch_and_single_node_is_unchanged():
    assert len(targets.kind_config_for("hardened")["nodes"]) == 1
    workers = targets.kind_config_for("hardened", workers=1)["nodes"][1:]
    assert workers == [{"role": "worker", "image": workers[0]["image"]}]


@pytest.mark.parametrize("profile", ["hardened", "weak", "decoy"])
def test_every_kind_config_lets_kubelet_start_on_cgroup_v1(profile):
    patches = [yaml.safe_load(p) for p in targets.kind_config_for(profile)["kubeadmConfigPatches"]]
    kubelet = [p for p in patches if p["kind"] == "KubeletConfiguration"]
    assert kubelet and kubelet[0]["failCgroupV1"] is False


@pytest.fixture(scope="module")
def kind_src():
    src = nodeimage.cache_root() / "gomod" / f"sigs.k8s.io/kind@{tools.KIND.version}"
    if not src.is_dir():
        pytest.skip(f"kind's source is not downloaded ({src}): `kubeprobe kind tools`")
    return src / "pkg/build/nodeimage"


def test_node_image_manifests_are_kinds_own_with_its_image_tags(kind_src):
    cni = nodeimage._kind_go_const(kind_src / "const_cni.go", "const defaultCNIManifest")
    storage = nodeimage._kind_go_const(kind_src / "const_storage.go",
                                       "const defaultStorageManifest")
    # kind's installcni action looks for these markers and templates the pod subnet
    assert "would you kindly template this file" in cni and "{{ .PodSubnet }}" in cni
    assert f"image: {nodeimage.KINDNETD_IMAGE}" in cni
    assert f"image: {nodeimage.STORAGE_PROVISIONER_IMAGE}" in storage
    assert nodeimage.STORAGE_HELPER_IMAGE in storage
    for text in (cni.replace("{{ .PodSubnet }}", "10.244.0.0/16"), storage):
        assert "` +" not in text and "+ `" not in text
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert docs and all(d["kind"] and d["metadata"]["name"] for d in docs)


def test_the_image_tags_are_the_ones_kind_compiles_in(kind_src):
    text = (kind_src / "const_cni.go").read_text() + (kind_src / "const_storage.go").read_text()
    for ref in (nodeimage.KINDNETD_IMAGE, nodeimage.STORAGE_PROVISIONER_IMAGE,
                nodeimage.STORAGE_HELPER_IMAGE):
        assert f'"{ref}"' in text


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_engine_probe_says_none_when_nothing_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    assert engine.answers(timeout=20) is None


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_engine_probe_reads_the_version_of_an_engine_that_answers():
    version = engine.answers()
    if version is None:
        pytest.skip("no engine answers here")
    done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, text=True, timeout=20)
    assert version == done.stdout.strip()


def test_our_dockerd_is_never_mistaken_for_a_foreign_process(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "PIDFILE", tmp_path / "dockerd.pid")
    (tmp_path / "dockerd.pid").write_text(str(os.getpid()))   # a live pid that is not dockerd
    assert engine.our_pid() is None
    assert engine.stop() is False


def kubeadm_corefile_plugins(version: str) -> set[str]:
    """The plugins in the Corefile the lab's kubeadm writes (its source in the module cache)."""
    manifests = (nodeimage.cache_root() / "gomod" / f"k8s.io/kubernetes@{version}" /
                 "cmd/kubeadm/app/phases/addons/dns/manifests.go")
    if not manifests.is_file():
        pytest.skip(f"kubeadm's source is not downloaded ({manifests}): `kubeprobe lab build`")
    body = manifests.read_text().split("Corefile: |", 1)[1].split("`", 1)[0]
    return {line.split()[0] for line in body.splitlines()
            if line.startswith(" " * 8) and not line.startswith(" " * 9)
            and line.split()[0][0].isalpha()}


def test_the_node_images_coredns_has_every_plugin_kubeadms_corefile_uses():
    from kubeprobe.lab.build import DEFAULT_VERSION
    if tools.stamp(tools.COREDNS) is None:
        pytest.fail("coredns is not built: `kubeprobe kind image` (.ci/install) builds it")
    wanted = kubeadm_corefile_plugins(DEFAULT_VERSION)
    assert {"kubernetes", "forward", "cache", "prometheus", "health", "ready"} <= wanted
    listed = subprocess.run([str(tools.COREDNS.binary), "-plugins"], capture_output=True,
                            text=True, check=True).stdout
    # `-plugins` prints one registered plugin (directive) name a line
    have = {line.strip() for line in listed.splitlines() if line.strip()}
    assert wanted <= have, (wanted, have)
    assert "route53" not in have           # the cloud backends are left out on purpose


def test_the_node_images_coredns_serves_kubeadms_corefile_without_the_api(tmp_path):
    """kubeadm's Corefile minus the kubernetes block (it needs an API server): the server
    starts, and health and metrics answer on their ports."""
    from tests.realetcd import free_port
    from kubeprobe.waiting import wait_for
    import requests
    if tools.stamp(tools.COREDNS) is None:
        pytest.fail("coredns is not built: `kubeprobe kind image` (.ci/install) builds it")
    dns, health, metrics = free_port(), free_port(), free_port()
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (tmp_path / "Corefile").write_text(f""".:{dns} {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:{health} {{
       lameduck 1s
    }}
    ready 127.0.0.1:{free_port()}
    prometheus 127.0.0.1:{metrics}
    forward . {tmp_path / 'resolv.conf'} {{
       max_concurrent 1000
    }}
    cache 30
    loop
    reload
    loadbalance
}}
""")
    server = subprocess.Popen([str(tools.COREDNS.binary), "-conf", str(tmp_path / "Corefile")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def healthy():
            if server.poll() is not None:
                raise AssertionError(f"coredns exited: {server.stdout.read()[-800:]}")
            try:
                return requests.get(f"http://127.0.0.1:{health}/health", timeout=2).text == "OK"
            except requests.ConnectionError:
                return False
        wait_for(healthy, 30, "coredns's health endpoint", interval_s=0.1)
        scraped = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        assert "coredns_build_info" in scraped and 'version="1.14.6"' in scraped
    finally:
        server.terminate()
        server.wait(timeout=15)
