"""Drop a binary into a running container's root filesystem from its node: the position
of an attacker with write access to the node (or to the container's filesystem), and the
only way to start a process a distroless image does not ship (a user-management tool, a
listener). The binary is the kubeprobe agent under the name the attack needs; its undo record
(kubeprobe.journal.PlantedFile: node, node access, container id, path) is journalled and its
removal registered before the copy, so nothing stays in the container, even after a crash.

Node access, in this order: `local://` (the lab: the runner is the node) or `docker://<node>`
(kind), which the target provides; else, on an intrusive run with a probe image, a privileged
pod on the node (kubeprobe.nodepod, `pod://<node>`; `--node-access pod` forces it). Without
either, Unavailable (the control is then SKIPPED with the reason).
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

from kubeprobe.context import Unavailable
from kubeprobe.journal import PlantedFile
from kubeprobe.nodepod import NodePod, access_uri
from kubeprobe.podexec import component_pod, exec_in_component

PLANTED = "binary planted from the node, started with kubectl exec"
# containerd v2 shims mount a container's root filesystem here (kind: /run/containerd; the
# lab: its own state directory below /run).
ROOTFS_GLOBS = ("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/rootfs",
                "/run/*/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/rootfs")


def container_id(pod, container: str) -> str:
    for status in pod.status.container_statuses or []:
        if status.name == container and status.container_id:
            runtime, _, cid = status.container_id.partition("://")
            if runtime != "containerd":
                raise Unavailable(f"container runtime {runtime} (planting needs containerd)")
            return cid
    raise Unavailable(f"{pod.metadata.name}/{container} has no running container")


def node_shell(uri: str, script: str) -> str:
    """Run `script` on the node: `local://` here, `docker://<node>` through docker exec."""
    if uri == "local://":
        cmd = ["sh", "-c", script]
    elif uri.startswith("docker://"):
        cmd = ["docker", "exec", uri[len("docker://"):], "sh", "-c", script]
    else:
        raise Unavailable(f"planting a binary needs local:// or docker:// node access, not {uri}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RuntimeError(f"no node access through {uri}: {cmd[0]} is not installed") from None
    if done.returncode != 0:
        raise RuntimeError(f"on {uri}: {script!r} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def _copy_to_node(uri: str, source: Path, destination: str) -> None:
    if uri == "local://":
        shutil.copy2(source, destination)
        return
    node = uri[len("docker://"):]
    # Streamed through `docker exec`, not `docker cp`: a container's rootfs lives below the
    # node's /run (a tmpfs in kind nodes), which `docker cp` cannot see ("Could not find the
    # file /run/containerd/io.containerd.runtime.v2.task/...").
    with open(source, "rb") as data:
        done = subprocess.run(["docker", "exec", "-i", node, "sh", "-c",
                               'cat > "$1" && chmod 0755 "$1"', "sh", destination],
                              stdin=data, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"copying to {destination} on {node} failed: "
                           f"{done.stderr.decode(errors='replace').strip()[:300]}")


def plant(ctx, pod, container: str, binary: Path | None, name: str) -> str:
    """Copy `binary` into the container as /tmp/kubeprobe-<nonce>/<name>; return that path
    (as seen inside the container). Its undo record is journalled and registered first.
    Through a privileged pod the binary is the pod's own agent (`binary` is not used)."""
    if ctx.node_host is None:
        if getattr(ctx, "node_pod", None) is not None:
            return _plant_through_pod(ctx, pod, container, name)
        raise Unavailable("no node access for this target (planting a binary needs it: "
                          "--intrusive with a --probe-image obtains it through a privileged "
                          "pod on the node)")
    uri = ctx.node_host(pod.spec.node_name)
    cid = container_id(pod, container)
    found = node_shell(uri, "ls -d " + " ".join(g.format(id=cid) for g in ROOTFS_GLOBS)
                        + " 2>/dev/null || true").split()
    if len(found) != 1:
        raise Unavailable(f"root filesystem of container {cid[:12]} not found on the node "
                          f"({len(found)} candidates)")
    inside = f"/tmp/kubeprobe-{ctx.nonce}"
    on_node = found[0] + inside
    ctx.node_access_used = f"{uri} (the target's own node access)"
    ctx.defer_undo(PlantedFile(pod.spec.node_name, uri, cid, on_node, pod.metadata.name,
                               container))
    node_shell(uri, f"mkdir -p {shlex.quote(on_node)}")
    _copy_to_node(uri, binary, f"{on_node}/{name}")
    node_shell(uri, f"chmod 0755 {shlex.quote(on_node + '/' + name)}")
    ctx.note(f"planted {binary.name} as {inside}/{name} in {pod.metadata.name}/{container} "
             f"through {uri} (container root filesystem {found[0]})")
    return f"{inside}/{name}"


def _plant_through_pod(ctx, pod, container: str, name: str) -> str:
    """plant() through a privileged pod on the container's node: the binary is the agent of
    the pod's own image (the probe image), copied by itself."""
    access, node = ctx.node_pod, pod.spec.node_name
    cid = container_id(pod, container)
    node_pod = NodePod(ctx.kube, access, node, ctx.unique_name("node"), ctx.run_id,
                       ctx.labels).start(ctx.defer_undo)
    ctx.node_access_used = f"{access_uri(node)}: {node_pod.describe()}"
    ctx.note(f"node access: {node_pod.describe()}")
    try:
        rootfs = json.loads(node_pod.agent("node-find", cid).strip().splitlines()[-1])["rootfs"]
        inside = f"/tmp/kubeprobe-{ctx.nonce}"
        on_node = rootfs + inside
        uri = access_uri(node)
        ctx.defer_undo(PlantedFile(node, uri, cid, on_node, pod.metadata.name, container,
                                   access.image, access.namespace, ctx.run_id,
                                   access.pull_secret))
        said = json.loads(node_pod.agent("node-plant", cid, inside, name).strip()
                          .splitlines()[-1])
    except (RuntimeError, ValueError, KeyError, IndexError) as exc:
        raise Unavailable(f"planting through {node_pod.describe()} failed: {exc}") from None
    finally:
        node_pod.delete()   # short-lived: gone before the attack starts
    ctx.note(f"planted the agent of {access.image} ({said.get('bytes')} bytes) as "
             f"{inside}/{name} in {pod.metadata.name}/{container} through {uri} (container "
             f"root filesystem {rootfs} on {node}, reached as {said.get('via')}{rootfs}); the "
             f"privileged pod {access.namespace}/{node_pod.name} is deleted")
    return f"{inside}/{name}"


def agent_binary() -> Path:
    """The static agent to plant; Unavailable when it cannot be built here (no Go)."""
    from kubeprobe.agent import build_agent
    try:
        return build_agent()
    except (OSError, RuntimeError) as exc:
        raise Unavailable(f"the agent binary cannot be built here: {exc}") from None


def run_planted(ctx, component: str, container: str, name: str, args: list[str], pod=None):
    """Plant the agent as `name` in the component's container and start it there with
    `args` (plus the nonce) through `kubectl exec`, both in the same pod (`pod` if the caller
    already has it). Returns the ComponentExec, or the Observation when the exec was
    refused or could not run."""
    pod = pod if pod is not None else component_pod(ctx.kube, component)
    if pod is None:
        raise Unavailable(f"no {component} pod in kube-system")
    through_pod = ctx.node_host is None and getattr(ctx, "node_pod", None) is not None
    path = plant(ctx, pod, container, None if through_pod else agent_binary(), name)
    return exec_in_component(ctx, component, container,
                             [path, *args, "--kubeprobe-nonce={nonce}"],
                             f"{PLANTED}; node access: {ctx.node_access_used}", pod=pod)
