"""Falco on a kind cluster the suite creates: the official Helm chart (falcosecurity/falco)
with the modern eBPF driver, JSON output and the project's generated rules as customRules;
plus what the report says about the Falco a target has (version, rules file hashes).

Nothing here can run on the project's CI machine (no Docker engine, no registry to pull the
Falco images from, no chart repository): the lab says NOT-VERIFIED for syscall-level
controls instead. The chart values follow the chart's documented keys (driver.kind,
tty, falco.json_output, customRules mounted into /etc/falco/rules.d).
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import yaml

from kubeprobe.resources import data

RULES_DIR = data("fixtures/falco")
RULES_FILES = ("kubeprobe_rules.yaml",)
CHART = "falcosecurity/falco"
CHART_REPO = "https://falcosecurity.github.io/charts"
NAMESPACE = "falco"
POD_LABEL = "app.kubernetes.io/name=falco"


class FalcoInstallError(RuntimeError):
    """One line: why Falco could not be installed (the run goes on, NOT-VERIFIED)."""


def rules_hashes(directory: Path = RULES_DIR) -> dict[str, str]:
    """sha256 of every rules file the project deploys, for the report."""
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in RULES_FILES}


def helm_values(directory: Path = RULES_DIR) -> dict:
    return {"driver": {"kind": "modern_ebpf"},
            "tty": True,  # flush alerts as they happen (the chart's advice for log readers)
            "falco": {"json_output": True, "json_include_output_property": True},
            "customRules": {name: (directory / name).read_text() for name in RULES_FILES}}


def install(kubeconfig: Path, workdir: Path, timeout_s: int = 600) -> str:
    """`helm upgrade --install` the chart into NAMESPACE and wait for it; return a one-line
    description. FalcoInstallError (one line) when helm or the chart is not available."""
    helm = shutil.which("helm")
    if helm is None:  # kubeprobe's own build (`kubeprobe kind tools`, helm.sh/helm/v3)
        from kubeprobe.kind import tools
        helm = str(tools.HELM.binary) if tools.stamp(tools.HELM) else None
    if helm is None:
        raise FalcoInstallError("helm is not installed")
    values = workdir / "falco-values.yaml"
    values.write_text(yaml.safe_dump(helm_values()))
    steps = [[helm, "repo", "add", "falcosecurity", CHART_REPO, "--force-update"],
             [helm, "upgrade", "--install", "falco", CHART, "--namespace", NAMESPACE,
              "--create-namespace", "--kubeconfig", str(kubeconfig), "-f", str(values),
              "--wait", "--timeout", f"{timeout_s}s"]]
    for cmd in steps:
        step = "helm " + " ".join(cmd[1:3])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 60)
        except subprocess.TimeoutExpired:
            raise FalcoInstallError(f"{step} timed out") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise FalcoInstallError(f"{step} failed: {last[:300]}")
    return f"Falco ({CHART}) installed in namespace {NAMESPACE} with {', '.join(RULES_FILES)}"


def describe(kube, namespace: str = NAMESPACE) -> str:
    """The Falco a target runs, for the report: image reference(s) of its pods, or none."""
    try:
        pods = kube.core.list_namespaced_pod(namespace, label_selector=POD_LABEL,
                                             _request_timeout=kube.timeout).items
    except Exception:  # noqa: BLE001 - the report says it could not tell
        return f"unknown (cannot list pods in {namespace})"
    images = sorted({c.image for p in pods for c in p.spec.containers if "falco" in c.image})
    return ", ".join(images) if images else f"none found in namespace {namespace}"
