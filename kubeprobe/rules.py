"""Generate Falco rules from a kube-system allowlist: `kubeprobe rules generate ALLOWLIST`.

The allowlist (YAML) names, per kube-system component, what it may do; everything else
alerts. Output is Falco rules YAML (lists, macros, rules), deterministic, every rule tagged
`kubeprobe` and printing the fields that carry an attack's nonce (proc.cmdline, fd.name,
container and pod names). The shipped fixtures/falco/kubeprobe_rules.yaml is this
generator's output for fixtures/falco/allowlist.yaml (a self-test keeps them equal).

    namespace: kube-system
    components:
      etcd:
        container: etcd             # container.name
        processes: [etcd]           # the only processes allowed to start
        write_dirs: [/var/lib/etcd] # the only directories it may write below
        listeners: [etcd]           # processes allowed to listen
        outbound: [etcd]            # processes allowed to connect out
        images: [registry.k8s.io/etcd]
    guidance:
      kubelet_ports: [10250, 10255, 10248]
      user_management_binaries: [useradd, passwd, ...]
      secret_dirs: [/var/run/secrets/kubernetes.io/serviceaccount]
      secret_read_after_ns: 60000000000
      binary_dirs: [/bin, /usr/bin, /usr/local/bin, ...]
      system_binaries: [sha256sum, cat, ls, ...]   # tools that never use the network
      namespace_change: true                       # alert on setns
      privileged_allowed: [kube-system/kube-proxy]  # namespace/container that may be privileged
      sensitive_mounts: [/, /proc*, /etc, ...]     # host paths no container may mount
      nodeport_audit: true

Macros used and not defined here are Falco's stock ones (falco_rules.yaml):
spawned_process, open_write, open_read, container, container_started. The stock `outbound` macro is *not*
used: it drops every destination in RFC 1918 space (`not fd.snet in (rfc_1918_addresses)`),
i.e. every pod, Service and kind node address, so a kube-system container talking to
anything inside the cluster would never alert. `kubeprobe_outbound` keeps the stock shape
(connect or unconnected UDP send, IPv4/IPv6, success or EINPROGRESS) minus that exclusion.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

STOCK_MACROS = ("spawned_process", "open_write", "open_read", "container", "container_started")
OUTBOUND_MACRO = {
    "macro": "kubeprobe_outbound",
    "condition": ("((evt.type = connect and evt.dir = <) or (evt.type in (sendto, sendmsg) and "
                  "evt.dir = < and fd.l4proto != tcp and fd.connected = false and "
                  "fd.name_changed = true)) and (fd.typechar = 4 or fd.typechar = 6) and "
                  "fd.ip != \"0.0.0.0\" and fd.net != \"127.0.0.0/8\" and "
                  "(evt.rawres >= 0 or evt.res = EINPROGRESS)")}
NONCE_FIELDS = ("proc.cmdline=%proc.cmdline user=%user.name container=%container.name "
                "image=%container.image.repository pod=%k8s.pod.name ns=%k8s.ns.name")
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]+$")
COMPONENT_KEYS = {"container": str, "processes": list, "write_dirs": list, "listeners": list,
                  "outbound": list, "images": list}

GUIDANCE_KEYS = {"kubelet_ports", "user_management_binaries", "secret_dirs",
                 "secret_read_after_ns", "binary_dirs", "system_binaries", "namespace_change",
                 "privileged_allowed", "sensitive_mounts", "nodeport_audit"}
_MOUNT = re.compile(r"^/[A-Za-z0-9_.:/-]*\*?$")
_NS_CONTAINER = re.compile(r"^[a-z0-9-]+/[a-z0-9.-]+$")


class AllowlistError(ValueError):
    """One line naming the field path that is wrong."""


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _NAME.match(v)
                                              for v in value):
        raise AllowlistError(f"{where}: must be a list of plain names/paths")
    return value


def validate(doc: Any) -> dict:
    if not isinstance(doc, dict):
        raise AllowlistError("allowlist: must be a mapping")
    components = doc.get("components")
    if not isinstance(components, dict) or not components:
        raise AllowlistError("allowlist.components: must map component names to allowlists")
    for name, spec in components.items():
        where = f"allowlist.components.{name}"
        if not re.match(r"^[a-z0-9-]+$", str(name)):
            raise AllowlistError(f"{where}: component names are lowercase DNS labels")
        if not isinstance(spec, dict):
            raise AllowlistError(f"{where}: must be a mapping")
        unknown = sorted(set(spec) - set(COMPONENT_KEYS))
        if unknown:
            raise AllowlistError(f"{where}.{unknown[0]}: unknown field")
        for key, kind in COMPONENT_KEYS.items():
            if key not in spec:
                raise AllowlistError(f"{where}.{key}: missing")
            if kind is list:
                _strings(spec[key], f"{where}.{key}")
            elif not isinstance(spec[key], str) or not _NAME.match(spec[key]):
                raise AllowlistError(f"{where}.{key}: must be a plain name")
    guidance = doc.get("guidance", {})
    if not isinstance(guidance, dict):
        raise AllowlistError("allowlist.guidance: must be a mapping")
    unknown = sorted(set(guidance) - GUIDANCE_KEYS)
    if unknown:
        raise AllowlistError(f"allowlist.guidance.{unknown[0]}: unknown field")
    ports = guidance.get("kubelet_ports", [])
    if not isinstance(ports, list) or not all(isinstance(p, int) for p in ports):
        raise AllowlistError("allowlist.guidance.kubelet_ports: must be a list of port numbers")
    for key in ("user_management_binaries", "secret_dirs", "binary_dirs", "system_binaries"):
        _strings(guidance.get(key, []), f"allowlist.guidance.{key}")
    allowed = guidance.get("privileged_allowed", [])
    if not isinstance(allowed, list) or not all(isinstance(a, str) and _NS_CONTAINER.match(a)
                                                for a in allowed):
        raise AllowlistError("allowlist.guidance.privileged_allowed: must be a list of "
                             "namespace/container names")
    mounts = guidance.get("sensitive_mounts", [])
    if not isinstance(mounts, list) or not all(isinstance(m, str) and _MOUNT.match(m)
                                               for m in mounts):
        raise AllowlistError("allowlist.guidance.sensitive_mounts: must be a list of absolute "
                             "host paths (a trailing * allowed)")
    for key in ("nodeport_audit", "namespace_change"):
        if not isinstance(guidance.get(key, False), bool):
            raise AllowlistError(f"allowlist.guidance.{key}: must be true or false")
    after = guidance.get("secret_read_after_ns", 0)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise AllowlistError("allowlist.guidance.secret_read_after_ns: must be a number of "
                             "nanoseconds")
    return doc


def _id(component: str) -> str:
    return component.replace("-", "_")


def _unless(allowed: list[str], list_name: str) -> str:
    """` and not proc.name in (list)`, or nothing when no process is allowed at all (an
    empty `in ()` is not valid in every Falco version)."""
    return f" and not proc.name in ({list_name})" if allowed else ""


def _rule(name: str, desc: str, condition: str, output: str, priority: str,
          source: str = "syscall") -> dict:
    rule = {"rule": name, "desc": desc, "condition": condition,
            "output": f"{output} ({NONCE_FIELDS if source == 'syscall' else '%ka.auditid'})",
            "priority": priority, "tags": ["kubeprobe", "kube-system"]}
    if source != "syscall":
        rule["source"] = source
    return rule


def component_items(ns: str, name: str, spec: dict) -> list[dict]:
    c = _id(name)
    in_container = f"kubeprobe_{c}_container"
    items: list[dict] = [
        {"macro": in_container,
         "condition": f"container and k8s.ns.name = {ns} and container.name = {spec['container']}"},
        {"list": f"kubeprobe_{c}_processes", "items": spec["processes"]},
        {"list": f"kubeprobe_{c}_listeners", "items": spec["listeners"]},
        {"list": f"kubeprobe_{c}_outbound", "items": spec["outbound"]},
        _rule(f"kubeprobe: unexpected process in {name}",
              f"A process other than the allowlisted ones started in the {name} container.",
              f"spawned_process and {in_container} and not proc.name in (kubeprobe_{c}_processes)",
              f"Unexpected process in {name}", "WARNING"),
        _rule(f"kubeprobe: write outside allowed directories in {name}",
              f"{name} wrote below a directory outside its allowlist.",
              f"open_write and {in_container} and not ("
              + " or ".join(f"fd.name startswith {d}/" for d in spec["write_dirs"]) + ")",
              f"Write outside allowed directories in {name} file=%fd.name", "WARNING"),
        _rule(f"kubeprobe: unexpected listener in {name}",
              f"A process not allowed to listen opened a listening socket in {name}.",
              f"evt.type = listen and evt.dir = < and {in_container}"
              + _unless(spec["listeners"], f"kubeprobe_{c}_listeners"),
              f"Unexpected listener in {name} port=%fd.sport", "WARNING"),
        _rule(f"kubeprobe: unexpected outbound connection from {name}",
              f"A process not allowed to connect out did so from {name}.",
              f"kubeprobe_outbound and {in_container}" + _unless(spec["outbound"], f"kubeprobe_{c}_outbound"),
              f"Unexpected outbound connection from {name} to=%fd.sip:%fd.sport", "WARNING"),
    ]
    return items


def guidance_items(ns: str, doc: dict) -> list[dict]:
    g = doc.get("guidance", {})
    images = sorted({i for spec in doc["components"].values() for i in spec["images"]})
    items: list[dict] = [
        {"list": "kubeprobe_kube_system_images", "items": images},
        _rule("kubeprobe: untrusted image in kube-system",
              "A container from an image outside the kube-system allowlist ran a process.",
              f"spawned_process and container and k8s.ns.name = {ns} and "
              "not container.image.repository in (kubeprobe_kube_system_images)",
              "Untrusted image in kube-system", "ERROR")]
    if g.get("kubelet_ports"):
        ports = ", ".join(str(p) for p in g["kubelet_ports"])
        items.append(_rule("kubeprobe: pod connected to the kubelet",
                           "A container connected to a kubelet port.",
                           f"evt.type = connect and evt.dir = < and container and "
                           f"fd.sport in ({ports})",
                           "Pod connected to the kubelet to=%fd.sip:%fd.sport", "WARNING"))
    if g.get("user_management_binaries"):
        items += [{"list": "kubeprobe_user_mgmt_binaries", "items": g["user_management_binaries"]},
                  _rule("kubeprobe: user management in a kube-system container",
                        "A user-management tool ran in a kube-system container (the stock "
                        "rule excludes containers).",
                        f"spawned_process and container and k8s.ns.name = {ns} and "
                        "proc.name in (kubeprobe_user_mgmt_binaries)",
                        "User management in kube-system", "ERROR"),
                  _rule("kubeprobe: write below /etc in a kube-system container",
                        "A kube-system container wrote below /etc.",
                        f"open_write and container and k8s.ns.name = {ns} and "
                        "fd.name startswith /etc/",
                        "Write below /etc in kube-system file=%fd.name", "ERROR")]
    if g.get("binary_dirs"):
        items += [{"list": "kubeprobe_binary_dirs", "items": g["binary_dirs"]},
                  _rule("kubeprobe: write below a binary directory in a kube-system container",
                        "A kube-system container wrote into a directory of executables.",
                        f"open_write and container and k8s.ns.name = {ns} and "
                        "fd.directory in (kubeprobe_binary_dirs)",
                        "Write below a binary directory in kube-system file=%fd.name", "ERROR")]
    if g.get("system_binaries"):
        items += [{"list": "kubeprobe_system_binaries", "items": g["system_binaries"]},
                  _rule("kubeprobe: system binary network activity in a kube-system container",
                        "A system tool that never uses the network connected out from a "
                        "kube-system container.",
                        "evt.type = connect and evt.dir = < and (fd.typechar = 4 or "
                        f"fd.typechar = 6) and container and k8s.ns.name = {ns} and "
                        "proc.name in (kubeprobe_system_binaries)",
                        "System binary network activity in kube-system to=%fd.sip:%fd.sport",
                        "ERROR")]
    if g.get("namespace_change"):
        items.append(_rule("kubeprobe: namespace change in a kube-system container",
                           "A process in a kube-system container called setns (attempted "
                           "container escape or lateral move between namespaces).",
                           f"evt.type = setns and evt.dir = < and container and "
                           f"k8s.ns.name = {ns}",
                           "Namespace change in kube-system res=%evt.res", "ERROR"))
    if "privileged_allowed" in g:
        allowed = " or ".join(f"(k8s.ns.name = {entry.split('/')[0]} and "
                              f"container.name = {entry.split('/')[1]})"
                              for entry in g["privileged_allowed"])
        items.append(_rule("kubeprobe: privileged container started",
                           "A privileged container started that is not on the allowlist.",
                           "container_started and container and container.privileged = true"
                           + (f" and not ({allowed})" if allowed else ""),
                           "Privileged container started", "ERROR"))
    if g.get("sensitive_mounts"):
        mounted = " or ".join(f'container.mount.dest[{m}] != "N/A"' for m in g["sensitive_mounts"])
        items.append(_rule("kubeprobe: sensitive mount container started",
                           "A container started with a sensitive host directory mounted.",
                           f"container_started and container and ({mounted})",
                           "Sensitive mount container started mounts=%container.mounts", "ERROR"))
    if g.get("secret_dirs"):
        after = int(g.get("secret_read_after_ns", 60_000_000_000))
        dirs = " or ".join(f"fd.name startswith {d}/" for d in g["secret_dirs"])
        items.append(_rule("kubeprobe: secret read after start-up",
                           "A long-running process read a mounted secret after start-up.",
                           f"open_read and container and ({dirs}) and proc.duration > {after}",
                           "Secret read after start-up file=%fd.name", "WARNING"))
    if g.get("nodeport_audit"):
        items.append(_rule("kubeprobe: NodePort service created",
                           "A Service of type NodePort was created (k8saudit).",
                           "ka.verb = create and ka.target.resource = services and "
                           "ka.req.service.type = NodePort",
                           "NodePort service created user=%ka.user.name "
                           "service=%ka.target.namespace/%ka.target.name", "WARNING",
                           source="k8s_audit"))
    return items


def generate(doc: Any) -> str:
    doc = validate(doc)
    ns = doc.get("namespace", "kube-system")
    items = [{"required_engine_version": "0.26.0"}, OUTBOUND_MACRO]
    for name in sorted(doc["components"]):
        items += component_items(ns, name, doc["components"][name])
    items += guidance_items(ns, doc)
    header = "# Generated by `kubeprobe rules generate`; edit the allowlist, not this file.\n"
    return header + yaml.safe_dump(items, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubeprobe rules")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="allowlist YAML -> Falco rules YAML")
    gen.add_argument("allowlist", type=Path)
    gen.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    try:
        text = generate(yaml.safe_load(args.allowlist.read_text()))
    except OSError as exc:
        print(f"kubeprobe: cannot read {args.allowlist}: {exc.strerror}", file=sys.stderr)
        return 2
    except (AllowlistError, yaml.YAMLError) as exc:
        print(f"kubeprobe: {args.allowlist}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
