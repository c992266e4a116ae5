"""kind-config.yaml is the hardened profile; fixtures/kind-config-weak.yaml its negative
control. Pin every hardening flag, and check the weak twin really weakens each of them."""
from __future__ import annotations

import re

import pytest
import yaml

from kubeprobe.targets import KIND_CONFIGS, kind_config_for


def patches(config: dict, kind: str) -> list[dict]:
    found = []
    sources = list(config.get("kubeadmConfigPatches", []))
    for node in config["nodes"]:
        sources += node.get("kubeadmConfigPatches", [])
    for text in sources:
        doc = yaml.safe_load(text)
        if doc.get("kind") == kind:
            found.append(doc)
    return found


@pytest.fixture(params=sorted(KIND_CONFIGS))
def config(request):
    return request.param, yaml.safe_load(KIND_CONFIGS[request.param].read_text())


def test_schema_and_pinned_node_image(config):
    _, doc = config
    assert doc["kind"] == "Cluster" and doc["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert len(doc["nodes"]) >= 1 and doc["nodes"][0]["role"] == "control-plane"
    for node in doc["nodes"]:
        assert re.fullmatch(r"kindest/node:v1\.3[4-9]\.\d+@sha256:[0-9a-f]{64}", node["image"])
    for kind in ("ClusterConfiguration", "KubeletConfiguration"):
        assert len(patches(doc, kind)) == 1, kind


def test_hardened_flags():
    doc = yaml.safe_load(KIND_CONFIGS["hardened"].read_text())
    kubelet = patches(doc, "KubeletConfiguration")[0]
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authentication"]["webhook"]["enabled"] is True
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["healthzBindAddress"] == "127.0.0.1"
    cluster = patches(doc, "ClusterConfiguration")[0]
    args = cluster["apiServer"]["extraArgs"]
    assert "NodeRestriction" in args["enable-admission-plugins"].split(",")
    assert args["audit-log-path"] and args["audit-policy-file"]
    mounted = {v["mountPath"] for v in cluster["apiServer"]["extraVolumes"]}
    assert args["audit-policy-file"] in mounted
    assert cluster["etcd"]["local"]["extraArgs"]["client-cert-auth"] == "true"
    assert cluster["etcd"]["local"]["extraArgs"]["peer-client-cert-auth"] == "true"
    node_mounts = {m["containerPath"] for m in doc["nodes"][0]["extraMounts"]}
    assert args["audit-policy-file"] in node_mounts


def test_weak_twin_weakens_every_hardening_flag():
    doc = yaml.safe_load(KIND_CONFIGS["weak"].read_text())
    kubelet = patches(doc, "KubeletConfiguration")[0]
    assert kubelet["authentication"]["anonymous"]["enabled"] is True
    assert kubelet["authorization"]["mode"] == "AlwaysAllow"
    assert kubelet["readOnlyPort"] == 10255
    assert kubelet["healthzBindAddress"] == "0.0.0.0"
    cluster = patches(doc, "ClusterConfiguration")[0]
    args = cluster["apiServer"]["extraArgs"]
    assert "NodeRestriction" not in args.get("enable-admission-plugins", "")
    assert "audit-log-path" not in args
    etcd = cluster["etcd"]["local"]["extraArgs"]
    assert etcd["client-cert-auth"] == "false" and etcd["trusted-ca-file"] == ""
    assert etcd["peer-client-cert-auth"] == "false" and etcd["peer-trusted-ca-file"] == ""
    assert "http://" in etcd["listen-client-urls"]
    init = patches(doc, "InitConfiguration")[0]
    assert init["nodeRegistration"]["kubeletExtraArgs"]["client-ca-file"] == ""


def test_both_profiles_pin_the_same_node_image():
    images = {p: yaml.safe_load(path.read_text())["nodes"][0]["image"]
              for p, path in KIND_CONFIGS.items()}
    assert len(set(images.values())) == 1, images


def test_relative_host_paths_are_resolved_and_exist():
    for node in kind_config_for("hardened")["nodes"]:
        for mount in node.get("extraMounts", []):
            from pathlib import Path
            assert Path(mount["hostPath"]).is_absolute() and Path(mount["hostPath"]).is_file()
