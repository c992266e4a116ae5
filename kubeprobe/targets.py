"""Where the suite runs: an existing cluster, a kind cluster it creates, or the local lab.

    existing  --kubeconfig/--context (or $KUBECONFIG): staging in nightly CI
    kind      a fresh cluster from kind-config.yaml (or the weak twin), unique name, deleted at
              the end unless --keep-cluster; needs the kind CLI and a Docker engine
    lab       the single-node cluster built from upstream sources on this machine (root)
    auto      kubeconfig if given, else kind if kind and Docker work, else the lab

Every failure to provide a target is a TargetError with one line: the suite exits 2.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from kubeprobe import falco, images
from kubeprobe.errors import one_line
from kubeprobe.kube import TargetError
from kubeprobe.profiles import KIND_CONFIGS, manifest_files
from kubeprobe.resources import DATA_ROOT
TARGET_KINDS = ("auto", "existing", "kind", "lab")


@dataclass
class Target:
    kind: str
    kubeconfig: Path | None
    context: str | None
    description: str
    cluster_profile: str | None = None          # hardened|weak when the suite built it
    node_host: Callable[[str], str] | None = None  # node name -> testinfra backend URI
    log_dir: Path | None = None
    images: list[str] = field(default_factory=list)  # refs of the extra images it was given
    falco: str | None = None                    # what the target did about Falco, if anything
    registry: dict | None = None                # the lab's registry (kubeprobe.lab.registry)
    teardown: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> list[str]:
        errors = []
        while self.teardown:
            step = self.teardown.pop()
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported, never hidden (on one line)
                errors.append(one_line(exc, 300))
        return errors


@dataclass(frozen=True)
class TargetOptions:
    target: str = "auto"
    kubeconfig: Path | None = None
    context: str | None = None
    cluster_profile: str = "hardened"
    k8s_version: str | None = None              # lab/kind: None = the newest supported
    keep_cluster: bool = False
    run_id: str = "local"
    extra_images: tuple[Path, ...] = ()
    install_falco: bool = True                  # hardened kind: Falco with the project's rules


def _run(cmd: list[str], timeout: float, what: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise TargetError(f"{what}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise TargetError(f"{what}: `{' '.join(cmd[:3])}` did not finish in {timeout:.0f}s") \
            from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise TargetError(f"{what}: `{' '.join(cmd[:3])}` failed: {last}")
    return done.stdout


def _archive_tags(tar: Path) -> list[str]:
    import json
    import tarfile
    with tarfile.open(tar) as archive:
        return [t for entry in json.load(archive.extractfile("manifest.json"))
                for t in entry.get("RepoTags") or []]


def kind_available() -> str | None:
    """None if kind and a Docker engine are usable, else the reason."""
    if shutil.which("kind") is None:
        return "the kind CLI is not installed"
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` in 10s"
    if done.returncode != 0:
        return "no Docker engine is running (`docker info` failed)"
    return None


def kind_config_for(profile: str) -> dict:
    """The kind config with relative hostPaths made absolute (kind resolves them from the
    caller's working directory, which is not ours to assume)."""
    config = yaml.safe_load(KIND_CONFIGS[profile].read_text())
    for node in config.get("nodes", []):
        for mount in node.get("extraMounts", []):
            if not os.path.isabs(mount["hostPath"]):
                mount["hostPath"] = str(DATA_ROOT / mount["hostPath"])
    return config


def apply_profile_manifests(kubeconfig: Path, profile: str) -> None:
    files = manifest_files(profile)
    if files:
        _run(["kubectl", "--kubeconfig", str(kubeconfig), "apply",
              *[a for f in files for a in ("-f", str(f))]], 120, f"applying the {profile} manifests")


def _existing(opts: TargetOptions) -> Target:
    kubeconfig = opts.kubeconfig or (Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
                                     if os.environ.get("KUBECONFIG") else None)
    if kubeconfig is None:
        raise TargetError("--target existing needs --kubeconfig (or $KUBECONFIG)")
    return Target("existing", kubeconfig, opts.context,
                  f"existing cluster ({kubeconfig}, context {opts.context or 'current'})")


def _kind(opts: TargetOptions) -> Target:
    reason = kind_available()
    if reason:
        raise TargetError(f"--target kind needs the kind CLI and a running Docker engine: "
                          f"{reason}")
    name = f"kubeprobe-{opts.run_id}"
    workdir = Path(tempfile.mkdtemp(prefix="kubeprobe-kind-"))
    config_path = workdir / "kind-config.yaml"
    config_path.write_text(yaml.safe_dump(kind_config_for(opts.cluster_profile)))
    kubeconfig = workdir / "kubeconfig"
    target = Target("kind", kubeconfig, f"kind-{name}",
                    f"kind cluster {name} ({opts.cluster_profile})", opts.cluster_profile,
                    node_host=lambda node: f"docker://{node}")
    if not opts.keep_cluster:
        target.teardown.append(lambda: _run(["kind", "delete", "cluster", "--name", name], 300,
                                            f"deleting kind cluster {name}"))
    try:
        _run(["kind", "create", "cluster", "--name", name, "--config", str(config_path),
              "--kubeconfig", str(kubeconfig), "--wait", "120s"], 900,
             f"creating kind cluster {name}")
        for image in opts.extra_images:
            _run(["kind", "load", "image-archive", str(image), "--name", name], 300,
                 f"loading {image.name} into kind")
            # As on the lab: a name@sha256 ref, so digest-pinning policies admit the pod.
            node_ctr = ["docker", "exec", f"{name}-control-plane", "ctr", "--namespace", "k8s.io"]
            try:
                target.images += images.add_digest_refs(node_ctr, _archive_tags(image))
            except (subprocess.CalledProcessError, RuntimeError) as exc:
                raise TargetError(f"pinning {image.name} by digest in kind failed: {exc}") from None
        apply_profile_manifests(kubeconfig, opts.cluster_profile)
        if opts.cluster_profile == "hardened" and opts.install_falco:
            try:
                target.falco = falco.install(kubeconfig, workdir)
            except falco.FalcoInstallError as exc:  # the run goes on: NOT-VERIFIED, said why
                target.falco = f"not installed: {exc}"
    except TargetError:
        target.close()
        raise
    return target


def _lab(opts: TargetOptions) -> Target:
    try:
        from kubeprobe import lab
    except ImportError as exc:
        raise TargetError(f"the local lab is not available: {exc}") from None
    try:
        state = lab.status()
        started_here = False
        if state is None:
            state = lab.up(opts.cluster_profile, extra_images=list(opts.extra_images),
                           version=opts.k8s_version)
            started_here = True
        elif state.profile != opts.cluster_profile:
            raise TargetError(f"a lab with profile {state.profile} is running; "
                              f"`kubeprobe lab down` first or pass --cluster-profile "
                              f"{state.profile}")
        elif opts.k8s_version and state.k8s_version != opts.k8s_version:
            raise TargetError(f"a lab on Kubernetes {state.k8s_version} is running; "
                              f"`kubeprobe lab down` first or pass --k8s-version {state.k8s_version}")
        elif opts.extra_images:
            # A lab brought up by `kubeprobe lab up` lacks the agent image: bring it in, so a
            # running lab is as full a target as one the suite starts itself.
            state.images = lab.cluster.ensure_images(list(opts.extra_images))
    except lab.LabError as exc:
        raise TargetError(str(exc)) from None
    target = Target("lab", state.kubeconfig, None,
                    f"local lab {state.k8s_version} ({state.profile}) on {state.node_name}",
                    state.profile, node_host=lambda node: "local://", log_dir=state.log_dir,
                    images=list(state.images), registry=state.registry)
    if started_here and not opts.keep_cluster:
        target.teardown.append(lab.down)
    return target


def resolve(opts: TargetOptions) -> Target:
    if opts.target not in TARGET_KINDS:
        raise TargetError(f"unknown target {opts.target!r} (one of {', '.join(TARGET_KINDS)})")
    if opts.cluster_profile not in KIND_CONFIGS:
        raise TargetError(f"unknown cluster profile {opts.cluster_profile!r} "
                          f"(one of {', '.join(KIND_CONFIGS)})")
    kind = opts.target
    if kind == "auto":
        if opts.kubeconfig or os.environ.get("KUBECONFIG"):
            kind = "existing"
        elif kind_available() is None:
            kind = "kind"
        else:
            kind = "lab"
    return {"existing": _existing, "kind": _kind, "lab": _lab}[kind](opts)
