"""Derive the lab's kubeadm configuration from a kind cluster config.

The kind configs (kind-config.yaml, fixtures/kind-config-weak.yaml) are the single source
of truth for every profile. Like kind v0.33 (pkg/cluster/internal/kubeadm/config.go), the lab
renders kubeadm v1beta3 documents for Kubernetes < 1.36 and v1beta4 from 1.36 on (kubeadm 1.37
knows only v1beta4), then applies the config's `kubeadmConfigPatches` (cluster-level, then the
first node's) to the document of the same `kind` (and apiVersion, when the patch names one),
as merge patches with kind's own kubeadm rules (pkg/internal/patch/kubeadm_merge.go):

- `extraArgs` / `kubeletExtraArgs` of a v1beta4 target are lists of {name, value}; a patch
  without apiVersion may still give them as a map (the v1beta3 form) and it is converted, so
  one kind config serves every supported version; entries merge by name, a null value
  removes one;
- `certSANs` lists are merged (appended, no duplicates), not replaced.

The lab-specific part (node IP, CRI socket, cgroup driver, directories) is set before
patching, so a profile can still override any of it.

An audit webhook (`LabSettings.audit_webhook`, `kubeprobe lab up --audit-webhook URL`) is the
one addition made after the patches, and only when asked for: the API server then also posts
its audit events (same policy as its log) to URL, with a bearer token, through a webhook
kubeconfig; no profile changes otherwise.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubeprobe.profiles import KIND_CONFIGS
from kubeprobe.resources import DATA_ROOT
PROFILES = KIND_CONFIGS
POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/16"


@dataclass(frozen=True)
class Mount:
    """A kind extraMount: on the lab node the host *is* the node, so the file is copied."""
    host_path: Path
    node_path: Path
    read_only: bool


AUDIT_WEBHOOK_KUBECONFIG = Path("/etc/kubernetes/audit/webhook.kubeconfig")
AUDIT_WEBHOOK_MODES = ("batch", "blocking")


@dataclass(frozen=True)
class AuditWebhook:
    """The API server's audit webhook backend, pointed at `url` (a kubeprobe receiver)."""
    url: str
    token: str
    mode: str = "batch"
    # The lab's receiver is a test's: short waits, so an event arrives within about a second
    # and a receiver that starts after the API server still gets the later batches.
    batch_max_wait: str = "1s"
    initial_backoff: str = "1s"

    def kubeconfig(self) -> dict:
        """The --audit-webhook-config-file document: the receiver as the cluster, the shared
        token as the user's bearer token."""
        return {"apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "kubeprobe-receiver", "cluster": {"server": self.url}}],
                "users": [{"name": "kube-apiserver", "user": {"token": self.token}}],
                "contexts": [{"name": "webhook", "context": {"cluster": "kubeprobe-receiver",
                                                             "user": "kube-apiserver"}}],
                "current-context": "webhook"}


@dataclass(frozen=True)
class LabSettings:
    """Everything about the machine that goes into the kubeadm config."""
    k8s_version: str
    etcd_image_tag: str
    node_name: str
    node_ip: str
    cri_socket: str
    etcd_data_dir: Path
    pod_logs_dir: Path
    skip_phases: tuple[str, ...] = ()
    audit_webhook: AuditWebhook | None = None


def load_kind_config(profile: str) -> dict:
    try:
        path = PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r} (expected one of {', '.join(PROFILES)})") from None
    return yaml.safe_load(path.read_text())


def kind_patches(kind_config: dict) -> list[dict]:
    """Cluster-level patches first, then the first control-plane node's (kind's order)."""
    patches = list(kind_config.get("kubeadmConfigPatches") or [])
    nodes = kind_config.get("nodes") or [{"role": "control-plane"}]
    first = next((n for n in nodes if n.get("role", "control-plane") == "control-plane"), nodes[0])
    patches += first.get("kubeadmConfigPatches") or []
    return [yaml.safe_load(p) if isinstance(p, str) else p for p in patches]


def kind_mounts(kind_config: dict) -> list[Mount]:
    nodes = kind_config.get("nodes") or []
    mounts = []
    for node in nodes[:1]:
        for m in node.get("extraMounts") or []:
            host = Path(m["hostPath"])
            mounts.append(Mount(host if host.is_absolute() else DATA_ROOT / host,
                                Path(m["containerPath"]), bool(m.get("readOnly", False))))
    return mounts


def kubeadm_api_version(k8s_version: str) -> str:
    """kubeadm.k8s.io/v1beta4 from Kubernetes 1.36 on, v1beta3 before (kind's rule)."""
    major, minor = (int(x) for x in k8s_version.lstrip("v").split(".")[:2])
    return "kubeadm.k8s.io/v1beta4" if (major, minor) >= (1, 36) else "kubeadm.k8s.io/v1beta3"


def args_as_list(args) -> list[dict]:
    """kubeadm v1beta4's extraArgs form: [{name, value}], from either form (map sorted by name)."""
    if isinstance(args, dict):
        return [{"name": k, "value": v} for k, v in sorted(args.items())]
    return list(args or [])


def args_as_map(args) -> dict:
    """Either extraArgs form as {name: value} (for reading a rendered document)."""
    if isinstance(args, list):
        return {a["name"]: a.get("value") for a in args}
    return dict(args or {})


def _merge_args(target_args, patch_args, patch_has_version: bool) -> list[dict]:
    if isinstance(patch_args, dict) and patch_has_version:
        raise ValueError("a v1beta4 patch gives extraArgs as a map; v1beta4 wants [{name, value}]")
    merged = args_as_list(target_args)
    for item in args_as_list(patch_args):
        names = [a["name"] for a in merged]
        if item["name"] in names:
            if item.get("value") is None:
                merged.pop(names.index(item["name"]))
            else:
                merged[names.index(item["name"])] = {"name": item["name"], "value": item["value"]}
        elif item.get("value") is not None:
            merged.append({"name": item["name"], "value": item["value"]})
    return merged


def kubeadm_merge(target: dict, patch: dict, patch_has_version: bool) -> dict:
    """kind's mergeAndStrip + merge patch: the kubeadm list rules first, then RFC 7386."""
    target = copy.deepcopy(target)
    v1beta4 = str(target.get("apiVersion", "")).endswith("v1beta4")

    def walk(t: dict, p: dict) -> dict:
        rest = {}
        for key, value in p.items():
            if key in ("extraArgs", "kubeletExtraArgs") and v1beta4:
                t[key] = _merge_args(t.get(key), value, patch_has_version)
            elif key == "certSANs" and isinstance(value, list):
                t[key] = list(t.get(key) or []) + [v for v in value if v not in (t.get(key) or [])]
            elif isinstance(value, dict):
                sub = t.get(key) if isinstance(t.get(key), dict) else {}
                t[key] = sub
                rest[key] = walk(sub, value)
            else:
                rest[key] = value
        return rest

    remaining = walk(target, patch)
    return merge_patch(target, remaining)


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: maps merge recursively, None deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def base_documents(s: LabSettings) -> list[dict]:
    """kubeadm documents (v1beta3 or v1beta4, as kind would) for a single schedulable node."""
    api = kubeadm_api_version(s.k8s_version)
    kubelet_args = {"node-ip": s.node_ip}
    init = {
        "apiVersion": api, "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": s.node_ip, "bindPort": 6443},
        "nodeRegistration": {
            "name": s.node_name, "criSocket": s.cri_socket, "taints": [],
            "kubeletExtraArgs": args_as_list(kubelet_args) if api.endswith("v1beta4") else kubelet_args,
            # The lab starts its own processes; kubeadm's host checks do not apply.
            "ignorePreflightErrors": ["all"],
        },
        "skipPhases": list(s.skip_phases),
    }
    cluster = {
        "apiVersion": api, "kind": "ClusterConfiguration",
        "clusterName": "kubeprobe-lab",
        # Pinned: without it kubeadm asks dl.k8s.io for the stable-1 label.
        "kubernetesVersion": s.k8s_version,
        "controlPlaneEndpoint": f"{s.node_ip}:6443",
        "networking": {"podSubnet": POD_SUBNET, "serviceSubnet": SERVICE_SUBNET,
                       "dnsDomain": "cluster.local"},
        "apiServer": {"certSANs": ["localhost", "127.0.0.1", s.node_ip]},
        "etcd": {"local": {"dataDir": str(s.etcd_data_dir), "imageTag": s.etcd_image_tag}},
    }
    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # containerd 1.6 cannot tell the kubelet its cgroup driver, and this host is cgroup v1.
        "cgroupDriver": "cgroupfs",
        # From 1.35 the kubelet refuses to start on cgroup v1 unless told otherwise (KEP-5573);
        # the lab skips kubeadm's preflight, so its SystemVerification cgroup check never runs.
        "failCgroupV1": False,
        "failSwapOn": False,
        # containerd 1.6.20 has no pinned-image label: never let image GC or eviction
        # remove the registry-less images (kind does the same).
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
        "podLogsDir": str(s.pod_logs_dir),
    }
    proxy = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        # Keep kube-proxy off the host's global conntrack sysctls (kind does the same).
        "conntrack": {"maxPerCore": 0},
    }
    return [init, cluster, kubelet, proxy]


def kubeadm_documents(profile: str, settings: LabSettings) -> list[dict]:
    docs = base_documents(settings)
    for patch in kind_patches(load_kind_config(profile)):
        same_kind = [i for i, d in enumerate(docs) if d["kind"] == patch.get("kind")]
        matches = [i for i in same_kind if patch.get("apiVersion", docs[i]["apiVersion"]) == docs[i]["apiVersion"]]
        if not same_kind:
            raise ValueError(f"{profile}: patch for {patch.get('kind')!r} matches no kubeadm document")
        # A patch naming another API version is for another Kubernetes version: kind skips it.
        for i in matches:
            docs[i] = kubeadm_merge(docs[i], {k: v for k, v in patch.items() if k != "apiVersion"},
                                    patch_has_version="apiVersion" in patch)
    if settings.audit_webhook is not None:
        _add_audit_webhook(profile, next(d for d in docs if d["kind"] == "ClusterConfiguration"),
                           settings.audit_webhook)
    return docs


def _set_arg(args, name: str, value: str):
    """extraArgs as kubeadm v1beta3's map or v1beta4's list of {name, value}."""
    if isinstance(args, list):
        return [a for a in args if a.get("name") != name] + [{"name": name, "value": value}]
    return {**(args or {}), name: value}


def _add_audit_webhook(profile: str, cluster: dict, hook: AuditWebhook) -> None:
    if hook.mode not in AUDIT_WEBHOOK_MODES:
        raise ValueError(f"audit webhook mode {hook.mode!r}: one of {', '.join(AUDIT_WEBHOOK_MODES)}")
    api = cluster.setdefault("apiServer", {})
    if not args_as_map(api.get("extraArgs")).get("audit-policy-file"):
        raise ValueError(f"the {profile} profile has no audit policy (--audit-policy-file): an "
                         "audit webhook would receive nothing")
    args = api.get("extraArgs")
    for name, value in (("audit-webhook-config-file", str(AUDIT_WEBHOOK_KUBECONFIG)),
                        ("audit-webhook-mode", hook.mode),
                        ("audit-webhook-initial-backoff", hook.initial_backoff)):
        args = _set_arg(args, name, value)
    if hook.mode == "batch":
        args = _set_arg(args, "audit-webhook-batch-max-wait", hook.batch_max_wait)
    api["extraArgs"] = args
    api["extraVolumes"] = list(api.get("extraVolumes") or []) + [
        {"name": "audit-webhook", "hostPath": str(AUDIT_WEBHOOK_KUBECONFIG),
         "mountPath": str(AUDIT_WEBHOOK_KUBECONFIG), "readOnly": True, "pathType": "File"}]


def render_kubeadm_config(profile: str, settings: LabSettings) -> str:
    return yaml.safe_dump_all(kubeadm_documents(profile, settings), sort_keys=False)
