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
    create_seconds: float | None = None         # kind: how long `kind create cluster` took

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
    kind_node_image: str = "auto"               # auto|local|upstream|<image ref>
    kind_workers: int = 0                       # worker nodes added to the kind config


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


def kind_cli() -> str | None:
    """The kind CLI: the one on PATH, else kubeprobe's cached build (`kubeprobe kind tools`)."""
    found = shutil.which("kind")
    if found:
        return found
    from kubeprobe.kind import tools
    return str(tools.KIND.binary) if tools.stamp(tools.KIND) else None


def kind_available() -> str | None:
    """None if kind and a Docker engine are usable (ours can be started), else the reason."""
    if kind_cli() is None:
        return "the kind CLI is not installed (`kubeprobe kind tools` builds it)"
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    from kubeprobe.kind import engine, tools
    if engine.answers() is None and not (tools.stamp(tools.MOBY) and tools.stamp(tools.RUNC)):
        return ("no Docker engine answers `docker info` and kubeprobe's own is not built "
                "(`kubeprobe kind tools`)")
    return None


def kind_config_for(profile: str, workers: int = 0) -> dict:
    """The kind config with relative hostPaths made absolute (kind resolves them from the
    caller's working directory, which is not ours to assume), plus `workers` worker nodes.

    A worker's kubelet is configured as the control plane's: the cluster-level
    KubeletConfiguration reaches every node, and the control plane's InitConfiguration
    `nodeRegistration` (kubelet flags) is repeated as each worker's JoinConfiguration."""
    config = yaml.safe_load(KIND_CONFIGS[profile].read_text())
    for node in config.get("nodes", []):
        for mount in node.get("extraMounts", []):
            if not os.path.isabs(mount["hostPath"]):
                mount["hostPath"] = str(DATA_ROOT / mount["hostPath"])
    if workers:
        first = config["nodes"][0]
        join_patches = []
        for patch in first.get("kubeadmConfigPatches", []):
            doc = yaml.safe_load(patch)
            if doc.get("kind") == "InitConfiguration" and doc.get("nodeRegistration"):
                join_patches.append(yaml.safe_dump(
                    {"kind": "JoinConfiguration", "nodeRegistration": doc["nodeRegistration"]}))
        for _ in range(workers):
            worker = {"role": "worker", "image": first.get("image")}
            if join_patches:
                worker["kubeadmConfigPatches"] = list(join_patches)
            config["nodes"].append(worker)
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


def _kind_node_image(choice: str, log) -> tuple[str, str]:
    """(image ref, why) for kind's nodes. auto: kind v0.33.0's upstream kindest/node where the
    engine has or can pull it, else kubeprobe's offline image of the lab's Kubernetes; local:
    the offline image always; upstream: never the offline one; anything else: that ref."""
    from kubeprobe.kind import lab_version, nodeimage
    if choice not in ("auto", "local", "upstream"):
        return choice, "given with --kind-node-image"
    upstream = nodeimage.UPSTREAM_DEFAULT
    if choice != "local":
        if nodeimage.docker_has(upstream):
            return upstream, "kind v0.33.0's default node image, present in the engine"
        try:
            done = subprocess.run(["docker", "pull", upstream], capture_output=True, text=True,
                                  timeout=600)
            pulled, why = done.returncode == 0, (done.stderr.strip().splitlines() or ["?"])[-1]
        except subprocess.TimeoutExpired:
            pulled, why = False, "docker pull did not finish in 600s"
        if pulled:
            return upstream, "kind v0.33.0's default node image, pulled"
        if choice == "upstream":
            raise TargetError(f"pulling {upstream} failed: {why[:200]}")
        reason = f"offline node image (pulling {upstream.split('@')[0]} failed: {why[:160]})"
    else:
        reason = "offline node image (--kind-node-image local)"
    try:
        ref = nodeimage.build(lab_version.stamp(None), log=log)
    except (lab_version.VersionError, nodeimage.NodeImageError, RuntimeError) as exc:
        raise TargetError(f"building the offline kind node image failed: {one_line(exc, 300)}") \
            from None
    nodeimage.prune_old(ref)
    return ref, reason


def _docker_network_exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name], capture_output=True,
                          timeout=30).returncode == 0


def _remove_network_if_unused(name: str) -> None:
    """kind never deletes its network: remove it when this run made it and nothing uses it."""
    done = subprocess.run(["docker", "network", "inspect", name, "--format",
                           "{{len .Containers}}"], capture_output=True, text=True, timeout=30)
    if done.returncode == 0 and done.stdout.strip() == "0":
        _run(["docker", "network", "rm", name], 60, f"removing docker network {name}")


def kind_node_names(kind: str, name: str) -> list[str]:
    return _run([kind, "get", "nodes", "--name", name], 60, "listing kind nodes").split()


def _kind(opts: TargetOptions) -> Target:
    import sys
    import time
    reason = kind_available()
    if reason:
        raise TargetError(f"--target kind needs the kind CLI and a container engine: {reason}")
    from kubeprobe.kind import engine
    log = lambda line: print(f"[kubeprobe kind] {line}", file=sys.stderr, flush=True)  # noqa: E731
    kind = kind_cli()
    name = f"kubeprobe-{opts.run_id}"
    teardown: list[Callable[[], None]] = []
    try:
        found = engine.ensure(log)
    except engine.EngineError as exc:
        raise TargetError(f"no container engine for kind: {exc}") from None
    if found.started_now:
        teardown.append(engine.stop)          # the engine this run started goes with it
    try:
        image, image_why = _kind_node_image(opts.kind_node_image, log)
    except TargetError:
        for step in reversed(teardown):
            step()
        raise
    workdir = Path(tempfile.mkdtemp(prefix="kubeprobe-kind-"))
    teardown.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    config = kind_config_for(opts.cluster_profile, workers=opts.kind_workers)
    for node in config["nodes"]:
        node["image"] = image
    config_path = workdir / "kind-config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    kubeconfig = workdir / "kubeconfig"
    nodes = len(config["nodes"])
    target = Target("kind", kubeconfig, f"kind-{name}",
                    f"kind cluster {name} ({opts.cluster_profile}, {nodes} node"
                    f"{'s' if nodes > 1 else ''}, {image}: {image_why})", opts.cluster_profile,
                    node_host=lambda node: f"docker://{node}")
    target.teardown.extend(teardown)
    network = os.environ.get("KIND_EXPERIMENTAL_DOCKER_NETWORK", "kind")
    if not _docker_network_exists(network):
        target.teardown.append(lambda: _remove_network_if_unused(network))
    if not opts.keep_cluster:
        # registered before create: a half-made cluster is deleted too
        target.teardown.append(lambda: _run([kind, "delete", "cluster", "--name", name], 300,
                                            f"deleting kind cluster {name}"))
    try:
        Path("/lib/modules").mkdir(parents=True, exist_ok=True)  # every node binds it
        started = time.monotonic()
        _run([kind, "create", "cluster", "--name", name, "--config", str(config_path),
              "--kubeconfig", str(kubeconfig), "--wait", "300s"], 900,
             f"creating kind cluster {name}")
        target.create_seconds = round(time.monotonic() - started, 1)
        log(f"kind create cluster {name}: {target.create_seconds}s")
        node_names = kind_node_names(kind, name)
        for image_tar in opts.extra_images:
            _run([kind, "load", "image-archive", str(image_tar), "--name", name], 300,
                 f"loading {image_tar.name} into kind")
            # As on the lab: a name@sha256 ref, so digest-pinning policies admit the pod.
            # Every node gets it: pod-vantage attacks run on whichever node the control names.
            refs: list[str] = []
            for node in node_names:
                node_ctr = ["docker", "exec", node, "ctr", "--namespace", "k8s.io"]
                try:
                    refs = images.add_digest_refs(node_ctr, _archive_tags(image_tar))
                except (subprocess.CalledProcessError, RuntimeError) as exc:
                    raise TargetError(f"pinning {image_tar.name} by digest on {node} failed: "
                                      f"{exc}") from None
            target.images += [r for r in refs if r not in target.images]
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
