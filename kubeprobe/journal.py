"""Crash-safe cleanup: what a run is about to create, written down before it is created.

Every creation path registers a structured undo record with `ctx.defer_undo(record)` (the
suite's run-wide objects: `Suite.defer_undo`), at the place it registered its cleanup before:

    ctx.defer_undo(ObjectRef("v1", "Pod", namespace, name))      # then create the pod
    ctx.defer_undo(PlantedFile(node=..., node_access="local://", container_id=..., ...))

`defer_undo` first appends the record to the run's journal, then registers the cleanup that
applies it (the same code `kubeprobe sweep` runs). The journal lives in two places:

- locally, `<reports-dir>/journal/<run-id>.jsonl`, one JSON object a line, fsync'd before
  the creation: `begin` (run id, kubeconfig, context, target), `intent` (seq, control,
  undo record), `undone` (seq: the cleanup worked), `end` (the run got to its end; the
  seqs left), `swept` (a later `kubeprobe sweep` left nothing);
- in the cluster: every object carries the label `kubeprobe.io/run-id` from its creation on
  (the sweep lists KINDS by that label in every namespace), and what cannot carry a label
  (a planted file) is recorded in ConfigMap `kubeprobe-journal` in the run's namespace
  before it is made, and struck out when it is removed.

A run killed with SIGKILL leaves a journal without `end`: the next run names it, and
`kubeprobe sweep --run-id ID` removes what it left (kubeprobe.sweep).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from kubeprobe.errors import one_line

log = logging.getLogger("kubeprobe")

FORMAT_VERSION = 1
CLUSTER_JOURNAL = "kubeprobe-journal"
RUN_ID_LABEL = "kubeprobe.io/run-id"   # same as kubeprobe.context.RUN_ID_LABEL


@dataclass(frozen=True)
class Kind:
    """A kind the suite creates: how to delete one and list them all by label."""
    api_version: str
    kind: str
    namespaced: bool
    api: str          # kubernetes.client class
    delete: str       # its delete method
    list_all: str     # its list method over every namespace (or the cluster-scoped list)


# In the order a sweep deletes them: controllers before what they own, contents before
# their namespace, cluster-scoped last.
KINDS = {k.kind: k for k in (
    Kind("apps/v1", "Deployment", True, "AppsV1Api", "delete_namespaced_deployment",
         "list_deployment_for_all_namespaces"),
    Kind("apps/v1", "ReplicaSet", True, "AppsV1Api", "delete_namespaced_replica_set",
         "list_replica_set_for_all_namespaces"),
    Kind("v1", "Pod", True, "CoreV1Api", "delete_namespaced_pod",
         "list_pod_for_all_namespaces"),
    Kind("v1", "Service", True, "CoreV1Api", "delete_namespaced_service",
         "list_service_for_all_namespaces"),
    Kind("v1", "ServiceAccount", True, "CoreV1Api", "delete_namespaced_service_account",
         "list_service_account_for_all_namespaces"),
    Kind("v1", "ConfigMap", True, "CoreV1Api", "delete_namespaced_config_map",
         "list_config_map_for_all_namespaces"),
    # The probe image's pull Secret (--probe-image-pull-secret): after the pods that use it.
    Kind("v1", "Secret", True, "CoreV1Api", "delete_namespaced_secret",
         "list_secret_for_all_namespaces"),
    Kind("v1", "Namespace", False, "CoreV1Api", "delete_namespace", "list_namespace"),
    Kind("v1", "Node", False, "CoreV1Api", "delete_node", "list_node"),
    Kind("certificates.k8s.io/v1", "CertificateSigningRequest", False, "CertificatesV1Api",
         "delete_certificate_signing_request", "list_certificate_signing_request"),
)}


class JournalError(ValueError):
    """A journal record that is malformed or names something kubeprobe never creates."""


@dataclass(frozen=True)
class ObjectRef:
    """An API object the run creates: undone by deleting it (gone already is fine)."""
    api_version: str
    kind: str
    namespace: str | None
    name: str
    type: str = field(default="object", init=False)

    def __post_init__(self) -> None:
        known = KINDS.get(self.kind)
        if known is None or known.api_version != self.api_version:
            raise JournalError(f"{self.api_version} {self.kind}: not a kind kubeprobe creates")
        if known.namespaced != bool(self.namespace):
            raise JournalError(f"{self.kind} {self.name}: namespace {self.namespace!r} does "
                               f"not fit a {'namespaced' if known.namespaced else 'cluster'}"
                               f"-scoped kind")
        if not _DNS_NAME.match(self.name or "") or (self.namespace
                                                    and not _DNS_NAME.match(self.namespace)):
            raise JournalError(f"{self.kind} {self.namespace}/{self.name}: not a valid name")

    @classmethod
    def of(cls, body: dict, namespace: str | None = None) -> "ObjectRef":
        """The reference of a manifest about to be created (in `namespace`, if namespaced)."""
        return cls(body["apiVersion"], body["kind"], namespace, body["metadata"]["name"])

    @property
    def key(self) -> tuple:
        return ("object", self.kind, self.namespace or "", self.name)

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def describe(self) -> str:
        return f"delete {self.kind} {self.where}"

    def apply(self, kube: Any) -> bool:
        """Delete it; True if it was there, False if it was already gone."""
        return kube.delete_object(self)

    def to_json(self) -> dict:
        return {"type": "object", "apiVersion": self.api_version, "kind": self.kind,
                "namespace": self.namespace, "name": self.name}


# Where kubeprobe.plant puts a binary: below a containerd task's rootfs, /tmp/kubeprobe-<nonce>.
PLANTED_PATH = re.compile(r"^/run/(?:[A-Za-z0-9._-]+/)?containerd/io\.containerd\.runtime\.v2\."
                          r"task/k8s\.io/[0-9a-f]{64}/rootfs(/tmp/kubeprobe-[0-9a-f]{8,32})$")
NODE_ACCESS = re.compile(r"^(local://|docker://[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
                         r"|pod://[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$")
_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class PlantedFile:
    """A directory dropped into a container's root filesystem from its node: undone by
    removing it there, through the same node access. Only paths kubeprobe.plant makes are
    accepted (a journal, above all the in-cluster one, is never trusted with `rm -rf /`)."""
    node: str
    node_access: str
    container_id: str
    path: str                   # on the node
    pod: str = ""               # for the description
    container: str = ""
    # pod://<node> (kubeprobe.nodepod): the privileged pod's image and namespace, and the run
    # id its one-shot removal pod is labelled with.
    image: str = ""
    pod_namespace: str = ""
    run_id: str = ""
    # The probe image's pull Secret in pod_namespace, when the run had one ("" otherwise).
    pull_secret: str = ""
    type: str = field(default="file", init=False)

    def __post_init__(self) -> None:
        if not NODE_ACCESS.match(self.node_access or ""):
            raise JournalError(f"planted file on {self.node}: node access "
                               f"{self.node_access!r} is not local://, docker://<node> or "
                               f"pod://<node>")
        if self.through_pod and (not _IMAGE_REF.match(self.image or "")
                                 or not _DNS_NAME.match(self.pod_namespace or "")
                                 or (self.run_id and not _DNS_NAME.match(self.run_id))
                                 or (self.pull_secret
                                     and not _DNS_NAME.match(self.pull_secret))):
            raise JournalError(f"planted file on {self.node} through a pod: image "
                               f"{self.image!r}, namespace {self.pod_namespace!r} or run id "
                               f"{self.run_id!r} is not valid")
        found = PLANTED_PATH.match(self.path or "")
        if not found or self.container_id not in self.path:
            raise JournalError(f"planted file {self.path!r}: not a path kubeprobe plants "
                               f"(<containerd task>/{self.container_id[:12]}.../rootfs/tmp/"
                               f"kubeprobe-<nonce>)")

    @property
    def through_pod(self) -> bool:
        return self.node_access.startswith("pod://")

    @property
    def inside(self) -> str:
        """The path as seen inside the container."""
        return PLANTED_PATH.match(self.path).group(1)

    @property
    def key(self) -> tuple:
        return ("file", self.node_access, self.path)

    def describe(self) -> str:
        where = f"{self.pod}/{self.container}" if self.pod else f"container {self.container_id[:12]}"
        return f"remove {self.inside} from {where} on node {self.node} ({self.node_access})"

    def apply(self, kube: Any = None) -> bool:
        """Remove it on the node; True if it was there. RuntimeError (or Unavailable) when
        the node cannot be reached."""
        if self.through_pod:
            from kubeprobe.nodepod import unplant
            return unplant(kube, self)
        from kubeprobe.plant import node_shell
        path = shlex.quote(self.path)
        said = node_shell(self.node_access, f"if [ -e {path} ]; then rm -rf -- {path} && "
                                            f"echo removed; else echo absent; fi")
        return said.strip() == "removed"

    def to_json(self) -> dict:
        return {"type": "file", "node": self.node, "nodeAccess": self.node_access,
                "containerId": self.container_id, "path": self.path, "pod": self.pod,
                "container": self.container,
                **({"image": self.image, "podNamespace": self.pod_namespace,
                    "runId": self.run_id,
                    **({"pullSecret": self.pull_secret} if self.pull_secret else {})}
                   if self.through_pod else {})}


Undo = ObjectRef | PlantedFile


def undo_from_json(doc: Any) -> Undo:
    """The record back from its JSON; JournalError when it is not one kubeprobe writes."""
    if not isinstance(doc, dict):
        raise JournalError(f"undo record {doc!r}: not an object")
    try:
        if doc.get("type") == "object":
            return ObjectRef(doc["apiVersion"], doc["kind"], doc.get("namespace") or None,
                             doc["name"])
        if doc.get("type") == "file":
            return PlantedFile(doc["node"], doc["nodeAccess"], doc["containerId"], doc["path"],
                               doc.get("pod", ""), doc.get("container", ""),
                               doc.get("image", ""), doc.get("podNamespace", ""),
                               doc.get("runId", ""), doc.get("pullSecret", ""))
    except (KeyError, TypeError) as exc:
        raise JournalError(f"undo record {doc!r}: missing {exc}") from None
    raise JournalError(f"undo record of unknown type {doc.get('type')!r}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def journal_dir(reports_dir: Path) -> Path:
    return Path(reports_dir) / "journal"


def journal_path(reports_dir: Path, run_id: str) -> Path:
    return journal_dir(reports_dir) / f"{run_id}.jsonl"


@dataclass
class Entry:
    seq: int
    control: str
    undo: Undo


class ClusterJournal:
    """ConfigMap `kubeprobe-journal` in the run's namespace: one key per record that no
    label can stand for (planted files), written before the creation, removed after."""

    def __init__(self, kube: Any, namespace: Callable[[], str], run_id: str) -> None:
        self.kube, self.namespace, self.run_id = kube, namespace, run_id
        self._exists = False

    @staticmethod
    def needs(undo: Undo) -> bool:
        """Labelled objects are found by their label; the rest is written here."""
        return not isinstance(undo, ObjectRef)

    def record(self, entry: Entry) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        namespace = self.namespace()
        data = {f"e{entry.seq:05d}": json.dumps({"control": entry.control,
                                                 "undo": entry.undo.to_json()})}
        core, timeout = self.kube.core, self.kube.timeout
        if not self._exists:
            body = client.V1ConfigMap(metadata=client.V1ObjectMeta(
                name=CLUSTER_JOURNAL, labels={RUN_ID_LABEL: self.run_id}), data=data)
            try:
                core.create_namespaced_config_map(namespace, body, _request_timeout=timeout)
                self._exists = True
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            self._exists = True
        core.patch_namespaced_config_map(CLUSTER_JOURNAL, namespace, {"data": data},
                                         _request_timeout=timeout)

    def clear(self, entry: Entry) -> None:
        self.kube.core.patch_namespaced_config_map(
            CLUSTER_JOURNAL, self.namespace(), {"data": {f"e{entry.seq:05d}": None}},
            _request_timeout=self.kube.timeout)


def read_cluster_journal(kube: Any, namespace: str) -> list[tuple[str, Undo]]:
    """(control, record) for every entry of the ConfigMap in `namespace` (none if absent).
    A malformed entry is JournalError: a sweep says so and removes nothing it names."""
    from kubernetes.client.rest import ApiException
    try:
        config_map = kube.core.read_namespaced_config_map(CLUSTER_JOURNAL, namespace,
                                                          _request_timeout=kube.timeout)
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise
    found = []
    for key, text in sorted((config_map.data or {}).items()):
        try:
            doc = json.loads(text)
        except ValueError:
            raise JournalError(f"ConfigMap {namespace}/{CLUSTER_JOURNAL} key {key}: not "
                               f"JSON") from None
        found.append((str(doc.get("control", "")), undo_from_json(doc.get("undo"))))
    return found


class Journal:
    """The run's journal: local file (fsync'd per record) plus the cluster side."""

    def __init__(self, path: Path, run_id: str, cluster: ClusterJournal | None = None,
                 guard: Any = None) -> None:
        self.path, self.run_id, self.cluster = Path(path), run_id, cluster
        self.guard = guard   # kubeprobe.interrupts.InterruptGuard: a record is one step
        self._lock = threading.RLock()   # re-entered: a record may ensure the namespace
        self._seq = 0
        self._pending: dict[int, Entry] = {}

    @classmethod
    def start(cls, reports_dir: Path, run_id: str, **meta: Any) -> "Journal":
        path = journal_path(reports_dir, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = cls(path, run_id)
        journal._write({"event": "begin", "run_id": run_id, "pid": os.getpid(),
                        **{k: (str(v) if isinstance(v, Path) else v) for k, v in meta.items()}})
        _fsync_dir(path.parent)
        return journal

    def _write(self, record: dict) -> None:
        line = json.dumps({"v": FORMAT_VERSION, "at": _now(), **record}, sort_keys=True)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    def intend(self, undo: Undo, control: str) -> Entry:
        """Write the record (locally, then in the cluster if no label stands for it) before
        the creation. Raises if either cannot be written: then nothing is created."""
        with self._lock:
            self._seq += 1
            entry = Entry(self._seq, control, undo)
            self._write({"event": "intent", "seq": entry.seq, "control": control,
                         "undo": undo.to_json()})
            self._pending[entry.seq] = entry
            if self.cluster is not None and ClusterJournal.needs(undo):
                self.cluster.record(entry)
            return entry

    def undone(self, entry: Entry) -> None:
        """The cleanup worked: strike the record out (best effort: a stale record only costs
        a later sweep a look at something already gone)."""
        with self._lock:
            self._pending.pop(entry.seq, None)
            try:
                self._write({"event": "undone", "seq": entry.seq})
            except OSError as exc:
                log.warning("journal %s: cannot record undone #%d: %s", self.path, entry.seq,
                            one_line(exc))
            if self.cluster is not None and ClusterJournal.needs(entry.undo):
                try:
                    self.cluster.clear(entry)
                except Exception as exc:  # noqa: BLE001 - best effort, said in the log
                    log.warning("cluster journal: cannot strike #%d: %s", entry.seq,
                                one_line(exc))

    @property
    def pending(self) -> list[Entry]:
        with self._lock:
            return list(self._pending.values())

    def end(self, interrupted: str | None = None) -> None:
        with self._lock:
            self._write({"event": "end", "left": sorted(self._pending),
                         **({"interrupted": interrupted} if interrupted else {})})


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_event(path: Path, record: dict) -> None:
    """One more record in an existing journal (the sweep's `undone` and `swept`)."""
    line = json.dumps({"v": FORMAT_VERSION, "at": _now(), **record}, sort_keys=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


@dataclass
class JournalFile:
    """A journal as read back: what its run meant to create and what it undid."""
    path: Path
    run_id: str
    begin: dict = field(default_factory=dict)
    entries: dict[int, Entry] = field(default_factory=dict)
    undone: set[int] = field(default_factory=set)
    ended: dict | None = None
    swept: bool = False
    problems: list[str] = field(default_factory=list)   # malformed records, one each
    # The last line cut short (killed mid-write): its creation never happened, since a
    # record is complete on disk before what it announces is created.
    torn: bool = False

    @property
    def pending(self) -> list[Entry]:
        return [e for seq, e in sorted(self.entries.items()) if seq not in self.undone]

    @property
    def unfinished(self) -> bool:
        """The run never got to its end (killed), or left something it could not undo."""
        return not self.swept and (self.ended is None or bool(self.pending))


def read_journal(path: Path) -> JournalFile:
    """Read a journal. A torn last line (the run killed mid-write: nothing was created for
    it) is skipped; a malformed record, or one that names something kubeprobe never
    creates, is listed in `problems` and never acted on."""
    path = Path(path)
    journal = JournalFile(path, path.name.removesuffix(".jsonl"))
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if number == len(lines) and not text.endswith("\n"):
            journal.torn = True
            continue
        try:
            record = json.loads(line)
            event = record["event"]
            if event == "begin":
                journal.begin = record
                journal.run_id = record.get("run_id", journal.run_id)
            elif event == "intent":
                journal.entries[int(record["seq"])] = Entry(int(record["seq"]),
                                                            str(record.get("control", "")),
                                                            undo_from_json(record["undo"]))
            elif event == "undone":
                journal.undone.add(int(record["seq"]))
            elif event == "end":
                journal.ended = record
            elif event == "swept":
                journal.swept = True
            else:
                raise JournalError(f"unknown event {event!r}")
        except (ValueError, KeyError, TypeError) as exc:  # JournalError is a ValueError
            journal.problems.append(f"{path}:{number}: {exc}")
    return journal


def journals(reports_dir: Path) -> Iterable[JournalFile]:
    directory = journal_dir(reports_dir)
    if not directory.is_dir():
        return []
    return [read_journal(p) for p in sorted(directory.glob("*.jsonl"))]

