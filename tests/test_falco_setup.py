"""Falco on kind: the chart values carry exactly the shipped rules with JSON output and the
modern eBPF driver; a missing helm is one line and the run goes on; the report names the
rules by hash. (Falco itself cannot run on this machine: see kubeprobe/falco.py.)"""
from __future__ import annotations

import hashlib

import pytest
import yaml

from kubeprobe import falco


def test_chart_values_deploy_the_shipped_rules_as_json():
    values = falco.helm_values()
    assert values["driver"]["kind"] == "modern_ebpf"
    assert values["falco"]["json_output"] is True
    shipped = (falco.RULES_DIR / "kubeprobe_rules.yaml").read_text()
    assert values["customRules"] == {"kubeprobe_rules.yaml": shipped}
    assert yaml.safe_load(yaml.safe_dump(values))["customRules"]["kubeprobe_rules.yaml"] == shipped


def test_rules_hashes_are_the_files_sha256():
    digest = hashlib.sha256((falco.RULES_DIR / "kubeprobe_rules.yaml").read_bytes()).hexdigest()
    assert falco.rules_hashes() == {"kubeprobe_rules.yaml": digest}


def test_install_without_helm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nor kubeprobe's own helm build
    with pytest.raises(falco.FalcoInstallError, match="^helm is not installed$"):
        falco.install(tmp_path / "kubeconfig", tmp_path)


def test_install_reports_the_failing_helm_step(tmp_path, monkeypatch):
    """A helm that cannot reach the chart repository (as on this machine) fails the step with
    helm's own last line, not a traceback."""
    helm = tmp_path / "helm"
    helm.write_text("#!/bin/sh\necho 'Error: looks like \"https://falcosecurity.github.io/charts\""
                    " is not a valid chart repository' >&2\nexit 1\n")
    helm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(falco.FalcoInstallError, match=r"^helm repo add failed: Error: looks like"):
        falco.install(tmp_path / "kubeconfig", tmp_path)
