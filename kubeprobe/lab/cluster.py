"""Bring the lab up and down: containerd + kubeadm + a hand-started kubelet on this host.

up:   pre-checks -> images -> containerd (own config/root/state/socket) -> kubeadm file phases
      -> kubelet -> `kubeadm init` for the remaining phases -> profile policies -> wait Ready.
down: kill what the lab started (by PID / process group, container processes by cgroup),
      unmount, remove netns/links/iptables chains/files it created, restore sysctls.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import yaml

from kubeprobe import images, profiles
from kubeprobe.lab import build, config, decoy, host, node_images, registry, signing

LAB_DIR = Path("/var/lib/kubeprobe-lab")
RUN_DIR = Path("/run/kubeprobe-lab")
KUBELET_DIR = Path("/var/lib/kubelet")
ETC_KUBERNETES = Path("/etc/kubernetes")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_NETWORK = "lab"
BRIDGE = "cni0"
POD_CIDR = "10.244.0.0/24"
KUBEPODS_CGROUP = "kubepods"
APT_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables")
# Ports the control plane and kubelet bind; any of them in use means a clash.
PORTS = {2379: "etcd", 2380: "etcd peer", 2381: "etcd metrics", 6443: "kube-apiserver",
         10248: "kubelet healthz", 10250: "kubelet", 10257: "kube-controller-manager",
         10259: "kube-scheduler"}
# Set by the lab (inotify) or rewritten by the kubelet; restored on down.
SYSCTLS = ("fs.inotify.max_user_instances", "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic",
           "kernel.panic_on_oops", "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes")
# Paths the kubelet, kubeadm or the static pods' DirectoryOrCreate volumes may create;
# whichever did not exist before `up` is removed by `down`.
HOST_PATHS = ("/etc/kubernetes", "/var/lib/kubelet", "/var/log/kubernetes", "/var/log/containers",
              "/var/log/pods", "/var/lib/cni", "/lib/modules", "/run/xtables.lock",
              "/usr/libexec/kubernetes", "/etc/ca-certificates", "/usr/local/share/ca-certificates",
              "/usr/share/ca-certificates", "/etc/pki")
SKIP_PHASES = ("preflight", "certs", "kubeconfig", "etcd", "control-plane", "kubelet-start", "addon/coredns")


class LabError(Exception):
    """A one-line, user-facing reason why the lab cannot do what was asked."""


@dataclass
class LabState:
    profile: str
    kubeconfig: Path
    node_name: str
    node_ip: str
    lab_dir: Path
    log_dir: Path
    k8s_version: str
    pids: dict[str, int] = field(default_factory=dict)
    audit_log: Path | None = None  # the API server's audit log on this host (None: profile has none)
    images: list[str] = field(default_factory=list)  # refs of the extra images, `name:tag` and `name@sha256:`
    audit_webhook: str | None = None  # where the API server posts audit events (None: nowhere)
    running: bool = True  # False: some lab process died (see log_dir); `down` cleans up
    registry: dict | None = None  # kubeprobe.lab.registry.RegistryInfo as JSON


CONTROL_PLANE_COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager",
                            "kube-scheduler"}


def containerd_socket() -> Path:
    return RUN_DIR / "containerd.sock"


def state_path() -> Path:
    return LAB_DIR / "state.json"


def log_dir() -> Path:
    return LAB_DIR / "logs"


def _read_raw_state() -> dict | None:
    try:
        return json.loads(state_path().read_text())
    except (OSError, ValueError):
        return None


def _alive(raw: dict) -> dict[str, int]:
    return {name: p["pid"] for name, p in raw.get("processes", {}).items()
            if host.process_alive(p["pid"], p.get("exe"))}


def status() -> LabState | None:
    """The running lab, or None when no lab process is alive."""
    raw = _read_raw_state()
    if raw is None or "node_name" not in raw:
        return None
    alive = _alive(raw)
    if not alive:
        return None
    return LabState(profile=raw["profile"], kubeconfig=Path(raw["kubeconfig"]), node_name=raw["node_name"],
                    node_ip=raw["node_ip"], lab_dir=LAB_DIR, log_dir=log_dir(), k8s_version=raw["k8s_version"],
                    pids=alive, audit_log=Path(raw["audit_log"]) if raw.get("audit_log") else None,
                    images=raw.get("images", []), audit_webhook=raw.get("audit_webhook"),
                    registry=raw.get("registry"),
                    running=bool(alive) and set(alive) == set(raw.get("processes", {})))


# -- up ---------------------------------------------------------------------------------
class _Up:
    def __init__(self, profile: str, extra_images: Sequence[Path], log: Callable[[str], None],
                 version: str, audit_webhook: config.AuditWebhook | None = None):
        self.profile = profile
        self.version = version
        self.audit_webhook = audit_webhook
        self.extra_images = [Path(p) for p in extra_images]
        self.log = log
        self.t0 = time.monotonic()
        self.raw: dict = {}

    def say(self, msg: str) -> None:
        self.log(f"[lab {time.monotonic() - self.t0:5.1f}s] {msg}")

    def save(self) -> None:
        LAB_DIR.mkdir(parents=True, exist_ok=True)
        tmp = state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(self.raw, indent=2) + "\n")
        os.replace(tmp, state_path())

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return host.run([str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                        check=check, timeout=timeout, **kw)

    def precheck(self) -> None:
        if os.geteuid() != 0:
            raise LabError("lab up needs root (it runs containerd, the kubelet and kubeadm on this host)")
        if self.profile not in config.PROFILES:
            raise LabError(f"unknown profile {self.profile!r}; use one of: {', '.join(config.PROFILES)}")
        if self.audit_webhook is not None:
            try:  # a profile without an audit policy is refused before anything starts
                config.kubeadm_documents(self.profile, config.LabSettings(
                    self.version, "", "", "", "", Path(), Path(), audit_webhook=self.audit_webhook))
            except ValueError as exc:
                raise LabError(f"--audit-webhook: {exc}") from None
        current = status()
        if current:
            raise LabError(f"a lab is already running (profile {current.profile}, pids "
                           f"{sorted(current.pids.values())}); run `kubeprobe lab down` first")
        if _read_raw_state() is not None:
            self.say("cleaning up a previous lab that is no longer running")
            down(log=self.log)
        busy = sorted(set(PORTS) & host.listening_ports())
        if busy:
            raise LabError("port(s) already in use: " + ", ".join(f"{p} ({PORTS[p]})" for p in busy))
        self.stamp = build.read_stamp(version=self.version)
        if self.stamp is None:
            raise LabError(f"the lab binaries of Kubernetes {self.version} are not built; run "
                           f"`kubeprobe lab build --k8s-version {build.minor_of(self.version)}` first")
        missing = [p for p in self.extra_images if not p.is_file()]
        if missing:
            raise LabError(f"image tar not found: {missing[0]}")
        self.bin = Path(self.stamp["k8s_bin"])

    def ensure_packages(self) -> None:
        missing = [p for p in APT_PACKAGES
                   if "Status: install ok installed" not in host.run(["dpkg", "-s", p], check=False).stdout]
        if missing:
            self.say(f"installing {' '.join(missing)} from Debian")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            proc = subprocess.run(["apt-get", "install", "-y", *missing], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise LabError(f"apt-get install {' '.join(missing)} failed: {proc.stderr.strip().splitlines()[-1:]}")

    def prepare_host(self) -> None:
        self.raw["preexisting_paths"] = [p for p in HOST_PATHS if os.path.lexists(p)]
        self.raw["sysctls"] = {k: host.read_sysctl(k) for k in SYSCTLS}
        self.raw["netns_before"] = sorted(host.netns_names())
        self.save()
        if int(host.read_sysctl("fs.inotify.max_user_instances") or 0) < 512:
            host.write_sysctl("fs.inotify.max_user_instances", "512")  # kind's known issue
        Path("/lib/modules").mkdir(exist_ok=True)  # the kube-proxy DaemonSet mounts it
        for d in (log_dir(), RUN_DIR, LAB_DIR / "cni", LAB_DIR / "pod-logs"):
            d.mkdir(parents=True, exist_ok=True)
        for old in log_dir().glob("*.log"):
            old.unlink()

    def write_kubeadm_config(self) -> Path:
        self.node_ip = host.node_ipv4("eth0")
        self.node_name = socket.gethostname().lower()
        settings = config.LabSettings(
            k8s_version=self.stamp["k8s_version"], etcd_image_tag=self.stamp["etcd_image_tag"],
            node_name=self.node_name, node_ip=self.node_ip, cri_socket=f"unix://{containerd_socket()}",
            etcd_data_dir=LAB_DIR / "etcd", pod_logs_dir=LAB_DIR / "pod-logs", skip_phases=SKIP_PHASES,
            audit_webhook=self.audit_webhook)
        path = LAB_DIR / "kubeadm.yaml"
        path.write_text(config.render_kubeadm_config(self.profile, settings))
        # kind's extraMounts: on the lab node the host is the node, so copy the files in place.
        for mount in config.kind_mounts(config.load_kind_config(self.profile)):
            mount.node_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mount.host_path, mount.node_path)
            mount.node_path.chmod(0o444 if mount.read_only else 0o644)
        if self.audit_webhook is not None:  # it holds the token: root only (the API server)
            hook = config.AUDIT_WEBHOOK_KUBECONFIG
            hook.parent.mkdir(parents=True, exist_ok=True)
            hook.touch(mode=0o600)
            hook.chmod(0o600)
            hook.write_text(yaml.safe_dump(self.audit_webhook.kubeconfig()))
            self.raw["audit_webhook"] = self.audit_webhook.url
        self.raw.update(profile=self.profile, node_name=self.node_name, node_ip=self.node_ip,
                        k8s_version=self.stamp["k8s_version"], kubeconfig=str(LAB_DIR / "admin.conf"))
        return path

    def write_cni_config(self) -> None:
        conflist = {"cniVersion": "1.0.0", "name": CNI_NETWORK, "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}
        (LAB_DIR / "cni" / "10-lab.conflist").write_text(json.dumps(conflist, indent=1))

    def start_containerd(self) -> None:
        cfg = LAB_DIR / "containerd.toml"
        cfg.write_text(CONTAINERD_CONFIG.format(root=LAB_DIR / "containerd", state=RUN_DIR / "containerd",
                                                sock=containerd_socket(), cni_conf=LAB_DIR / "cni",
                                                cni_bin=CNI_BIN_DIR, pause=self.pause_ref,
                                                registry_hosts=registry.hosts_dir(LAB_DIR)))
        exe = shutil.which("containerd")
        pid = host.start_process([exe, "--config", str(cfg)], log_dir() / "containerd.log")
        self.raw.setdefault("processes", {})["containerd"] = {"pid": pid, "exe": exe}
        self.save()
        host.wait_for(lambda: containerd_socket().is_socket() and host.run(
            ["ctr", "--address", str(containerd_socket()), "version"], check=False).returncode == 0,
            30, "containerd to answer", interval_s=0.1)

    def kubeadm(self, *args: str, log_name: str, timeout: float = 300) -> None:
        cmd = [str(self.bin / "kubeadm"), *args, "--config", str(LAB_DIR / "kubeadm.yaml"), "-v=1"]
        with open(log_dir() / log_name, "ab") as out:
            out.write(f"$ {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        if proc.returncode != 0:
            tail = (log_dir() / log_name).read_text().strip().splitlines()[-1:]
            raise LabError(f"kubeadm {' '.join(args)} failed (see {log_dir() / log_name}): {' '.join(tail)}")

    def start_kubelet(self) -> None:
        env_file = (KUBELET_DIR / "kubeadm-flags.env").read_text()
        kubeadm_args = shlex.split(env_file.split("=", 1)[1].strip().strip('"'))
        exe = str(self.bin / "kubelet")
        args = [exe, f"--config={KUBELET_DIR / 'config.yaml'}", f"--kubeconfig={ETC_KUBERNETES / 'kubelet.conf'}",
                f"--bootstrap-kubeconfig={ETC_KUBERNETES / 'bootstrap-kubelet.conf'}", *kubeadm_args]
        pid = host.start_process(args, log_dir() / "kubelet.log")
        self.raw["processes"]["kubelet"] = {"pid": pid, "exe": exe}
        self.save()

    def node_ready(self) -> bool:
        proc = self.kubectl("get", "node", self.node_name, "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        conditions = json.loads(proc.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def kube_proxy_ready(self) -> bool:
        proc = self.kubectl("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-proxy", "-o", "json", check=False)
        pods = json.loads(proc.stdout)["items"] if proc.returncode == 0 else []
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for p in pods for c in p["status"].get("conditions", []))

    def control_plane_visible(self) -> bool:
        """The static pods' mirror pods are in kube-system: the suite discovers etcd and the
        API server's flags through them, so `up` is not done before they show."""
        proc = self.kubectl("-n", "kube-system", "get", "pods", "-l", "tier=control-plane",
                            "-o", "json", check=False)
        pods = json.loads(proc.stdout)["items"] if proc.returncode == 0 else []
        seen = {p["metadata"].get("labels", {}).get("component") for p in pods}
        return CONTROL_PLANE_COMPONENTS <= seen

    def apply_policies(self) -> None:
        files = profiles.manifest_files(self.profile)
        if not files:
            self.say(f"no policies to apply for the {self.profile} profile")
            return
        args = [a for f in files for a in ("-f", str(f))]
        host.wait_for(lambda: self.kubectl("apply", *args, check=False).returncode == 0, 60,
                      f"kubectl apply of the {self.profile} manifests", interval_s=1)
        self.say(f"applied {len(files)} file(s): {', '.join(f.name for f in files)}")

    def start_registry(self) -> None:
        """The lab's OCI registry (kubeprobe/lab/registry.py), once the CA exists."""
        info, processes = registry.start(self.profile, profiles.registry_authenticated(self.profile),
                                         self.node_ip, LAB_DIR, log_dir(), log=self.say)
        self.raw["processes"].update(processes)
        self.raw["registry"] = info.to_json()
        self.save()
        self.say(f"registry {info.host} on {info.address} "
                 f"({'htpasswd' if info.authenticated else 'anonymous'})")

    def populate_registry(self) -> None:
        info = registry.populate(registry.RegistryInfo.from_json(self.raw["registry"]), self.kubectl,
                                 Path(self.stamp["pause"]), LAB_DIR / "registry", self.extra_images, log=self.say)
        if profiles.signature_admission(self.profile):
            info.signature_admission = signing.install_policy_controller(
                info, self.kubectl, self.node_ip, LAB_DIR / "registry", info.images, info.public_keys, log=self.say)
        self.raw["registry"] = info.to_json()
        self.save()

    def run(self) -> LabState:
        self.ensure_packages()
        self.prepare_host()
        kubeadm_config = self.write_kubeadm_config()
        self.kubeconfig = ETC_KUBERNETES / "admin.conf"
        self.write_cni_config()
        tars = node_images.build_node_images(self.stamp, kubeadm_config, build.cache_root() / "images")
        self.pause_ref = next(images.normalize_ref(r) for r in node_images.kubeadm_image_list(
            self.bin / "kubeadm", kubeadm_config) if "/pause:" in r)
        self.say(f"{len(tars)} node image(s) ready; starting containerd")
        self.start_containerd()
        with ThreadPoolExecutor(max_workers=4) as pool:
            imports = [pool.submit(images.import_into_containerd, t, str(containerd_socket()))
                       for t in tars + self.extra_images]
            for phase in ("certs all", "kubeconfig all", "etcd local", "control-plane all", "kubelet-start"):
                self.kubeadm("init", "phase", *phase.split(), log_name="kubeadm-phases.log")
            self.start_registry()
            self.say("kubeadm file phases done; waiting for image imports")
            refs = [job.result() for job in imports]
        self.raw["images"] = [r for per_tar in refs[len(tars):] for r in per_tar]
        self.say(f"imported {len(imports)} image(s); starting kubelet")
        self.start_kubelet()
        self.kubeadm("init", log_name="kubeadm-init.log")
        shutil.copyfile(self.kubeconfig, LAB_DIR / "admin.conf")
        os.chmod(LAB_DIR / "admin.conf", 0o600)
        self.kubeconfig = LAB_DIR / "admin.conf"
        audit = _audit_log_path(self.profile)
        self.raw["audit_log"] = str(audit) if audit else None
        self.save()
        self.say("kubeadm init done; waiting for the node, kube-proxy and the default ServiceAccount")
        host.wait_for(self.node_ready, 120, "node Ready")
        host.wait_for(lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
                      60, "the default ServiceAccount")
        self.apply_policies()
        self.populate_registry()
        if self.profile == "decoy":
            self.raw["processes"].update(decoy.install(self.node_ip, log_dir()))
            self.save()
            self.say("decoy: REJECT rules and the refusing TLS server are in place")
        host.wait_for(self.kube_proxy_ready, 120, "kube-proxy Ready")
        host.wait_for(self.control_plane_visible, 60, "the control plane's mirror pods")
        self.say(f"node {self.node_name} ({self.node_ip}) Ready; kubeconfig {self.kubeconfig}")
        return status()


def ensure_images(extra_images: Sequence[Path]) -> list[str]:
    """Import image tars the running lab does not hold yet (e.g. the agent image, when the lab
    was brought up by `kubeprobe lab up` rather than by the suite); returns every extra ref
    the lab now answers to, as recorded in its state."""
    raw = _read_raw_state()
    if raw is None:
        raise LabError("no lab state: is a lab running?")
    held = set(raw.get("images", []))
    for tar in extra_images:
        with tarfile.open(tar) as archive:
            tags = [images.normalize_ref(t) for entry in json.load(
                archive.extractfile("manifest.json")) for t in entry.get("RepoTags") or []]
        if tags and all(t in held for t in tags):
            continue
        try:
            refs = images.import_into_containerd(tar, str(containerd_socket()))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise LabError(f"cannot import {tar} into the running lab: {exc}") from None
        for ref in refs:
            if ref not in held:
                raw.setdefault("images", []).append(ref)
                held.add(ref)
    tmp = state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    os.replace(tmp, state_path())
    return list(raw.get("images", []))


def _audit_log_path(profile: str) -> Path | None:
    docs = config.kubeadm_documents(profile, config.LabSettings(build.DEFAULT_VERSION, "", "", "", "", Path(), Path()))
    cluster = next(d for d in docs if d["kind"] == "ClusterConfiguration")
    path = config.args_as_map(cluster.get("apiServer", {}).get("extraArgs")).get("audit-log-path")
    return Path(path) if path and path != "-" else None


def up(profile: str, extra_images: Sequence[Path] = (), log: Callable[[str], None] | None = None,
       version: str | None = None, audit_webhook: config.AuditWebhook | None = None) -> LabState:
    """Start the lab on Kubernetes `version` (a supported minor or patch; default: the
    newest). `audit_webhook`: the API server also posts its audit events there (profiles with
    an audit policy only; the file lives below /etc/kubernetes/audit, which `down` removes)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        version = build.resolve_version(version)
    except ValueError as exc:
        raise LabError(str(exc)) from None
    runner = _Up(profile, extra_images, log, version, audit_webhook)
    runner.precheck()  # refusals leave any running lab alone
    try:
        return runner.run()
    except (LabError, host.WaitTimeout, RuntimeError, OSError, subprocess.SubprocessError,
            registry.RegistryLabError) as exc:
        # A half-started lab is useless to the caller: tear it down, keep the logs.
        log(f"lab up failed: {exc}; tearing down (logs kept in {log_dir()})")
        down(log=log)
        raise LabError(f"lab up failed: {exc} (logs in {log_dir()})") from exc


# -- down -------------------------------------------------------------------------------
def down(log: Callable[[str], None] | None = None) -> None:
    """Stop the lab and remove what it created. Idempotent; every step runs even if an
    earlier one fails, and state.json is kept until all of them succeeded."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if os.geteuid() != 0:
        raise LabError("lab down needs root")
    raw = _read_raw_state() or {}
    errors = []
    for step in (_stop_processes, _remove_network, _remove_files, _restore_sysctls):
        try:
            step(raw)
        except Exception as exc:  # keep going: leave as little behind as possible
            errors.append(f"{step.__name__.strip('_').replace('_', ' ')}: {exc}")
    if errors:
        raise LabError(f"lab down incomplete ({'; '.join(errors)}); run it again")
    state_path().unlink(missing_ok=True)
    log("lab is down")


def _stop_processes(raw: dict) -> None:
    # Only PIDs that still run the executable the lab started (a stale PID may be reused).
    ours = {name: p["pid"] for name, p in raw.get("processes", {}).items()
            if host.process_alive(p["pid"], p.get("exe"))}
    # The kubelet first, so it does not restart what we kill next; then container processes
    # (found by their pod cgroups) and their shims (by our containerd socket); then containerd.
    if "kubelet" in ours:
        host.kill_pids([ours["kubelet"]], groups=True)
    host.kill_pids(host.pids_in_cgroup_subtree(KUBEPODS_CGROUP), grace=0)
    host.kill_pids(host.pids_with_cmdline_arg(str(containerd_socket())), grace=1)
    if "containerd" in ours:
        host.kill_pids([ours["containerd"]], groups=True)
    others = [pid for name, pid in ours.items() if name not in ("kubelet", "containerd")]
    if others:  # e.g. the decoy profile's refusing TLS server
        host.kill_pids(others, groups=True)
    host.kill_pids(host.pids_in_cgroup_subtree(KUBEPODS_CGROUP), grace=0)
    host.remove_cgroup_subtree(KUBEPODS_CGROUP)


def _remove_network(raw: dict) -> None:
    netns_before = set(raw.get("netns_before", []))
    for name in sorted(host.netns_names() - netns_before):
        if name.startswith("cni-"):
            host.delete_netns(name)
    host.unmount_all([LAB_DIR, RUN_DIR, KUBELET_DIR])
    for veth in host.links_with_master(BRIDGE):
        host.delete_link(veth)
    host.delete_link(BRIDGE)
    for tool in host.iptables_commands():
        host.remove_chains(tool, ("KUBE-", "CNI-"))


def _remove_files(raw: dict) -> None:
    # Logs (and a copy of the audit log) stay for CI; everything else goes.
    audit = raw.get("audit_log")
    if audit and Path(audit).is_file():
        log_dir().mkdir(parents=True, exist_ok=True)
        shutil.copyfile(audit, log_dir() / "audit.log")
    preexisting = set(raw.get("preexisting_paths", HOST_PATHS if not raw else []))
    # /lib/modules stays: kind's nodes bind-mount it (`--volume /lib/modules:/lib/modules:ro`),
    # and a node made while the lab was up would be left with a deleted directory, where every
    # pod mounting it (kube-proxy, kindnet) fails to start. An empty directory harms no one.
    for path in [p for p in HOST_PATHS if p not in preexisting and p != "/lib/modules"] + [
            str(KUBELET_DIR), str(RUN_DIR)]:
        _remove(Path(path))
    for cni_state in (Path("/var/lib/cni/networks") / CNI_NETWORK,
                      *Path("/var/lib/cni/results").glob(f"{CNI_NETWORK}-*")):
        _remove(cni_state)
    if "/etc/kubernetes" in preexisting:
        for name in ("manifests", "pki", "audit", "tmp", "admin.conf", "super-admin.conf", "kubelet.conf",
                     "controller-manager.conf", "scheduler.conf"):
            _remove(ETC_KUBERNETES / name)
    for entry in LAB_DIR.iterdir() if LAB_DIR.is_dir() else []:
        if entry.name not in ("logs", "state.json"):
            _remove(entry)


def _restore_sysctls(raw: dict) -> None:
    """Undo the lab's inotify bump and the kubelet's kernel tunables."""
    for key, value in (raw.get("sysctls") or {}).items():
        if value is not None and host.read_sysctl(key) != value:
            host.write_sysctl(key, value)


def _remove(path: Path) -> None:
    if host.mounts_under([path]):
        host.unmount_all([path])
        if host.mounts_under([path]):
            raise LabError(f"cannot remove {path}: still mounted ({host.mounts_under([path])[0]})")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


CONTAINERD_CONFIG = """\
# Written by kubeprobe lab: a private containerd for the lab node.
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{sock}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This host withholds CAP_SYS_RESOURCE even from root, so runc cannot lower a container's
  # oom_score_adj below containerd's own (static pods ask for -997/-998): clamp instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # kubeprobe/lab/registry.py: the lab registry's name -> node address, with the lab CA
    config_path = "{registry_hosts}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""
