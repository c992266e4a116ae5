"""Node access through the cluster, the way an attacker with pod-creating rights gets it: a
short-lived privileged pod pinned to the node (nodeName, tolerating every taint, the
control-plane's included) with the host's PID namespace, so `/proc/<pid>/root` of the node's
init (or of containerd or the kubelet, where init refuses it) is the node's root directory in
the node's mount namespace: the agent in the
pod (`node-find`, `node-plant`, `node-unplant` in agent/main.go) reaches a container's root
filesystem below containerd's task directory there, exactly where kubeprobe.plant's
`local://` and `docker://` routes reach it.

Only for intrusive runs (the controls that plant are `intrusive: true`) and with a probe
image (the agent image; the pod runs it as root, privileged). The pod's undo record is
journalled before it is created, and it is deleted as soon as the binary is planted; the
planted file's record (node access `pod://<node>`) is removed by a second one-shot pod, the
same code `kubeprobe sweep` runs.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from kubernetes.client.rest import ApiException

from kubeprobe.context import RUN_ID_LABEL, Unavailable
from kubeprobe.errors import one_line
from kubeprobe.journal import ObjectRef
from kubeprobe.podexec import exec_in_pod
from kubeprobe.waiting import WaitTimeout, wait_for

AGENT = "/kubeprobe-agent"
CONTAINER = "agent"
ROLE_LABEL = "kubeprobe.io/role"
START_DEADLINE_S = 60.0
STUCK = {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName",
         "CreateContainerConfigError", "CreateContainerError"}
HOW = ("hostPID, privileged, every taint tolerated; the node's mount namespace through "
       "/proc/<pid>/root of the node's init, containerd or kubelet")


def access_uri(node: str) -> str:
    return f"pod://{node}"


@dataclass(frozen=True)
class NodePodAccess:
    """How a run may obtain node access through the cluster: where the pod goes and what it
    runs (the suite sets it for intrusive runs with a probe image)."""
    namespace: str
    image: str
    # namespace -> the pod-spec additions for the probe image there (its imagePullSecrets:
    # kubeprobe.workloads.probe_image_pod_spec), or None: the image needs no credentials.
    pod_spec: Callable[[str], dict] | None = field(default=None, compare=False)
    # The Secret those additions name (recorded with a planted file for its removal pod).
    pull_secret: str = ""

    def spec(self) -> dict[str, Any]:
        return self.pod_spec(self.namespace) if self.pod_spec is not None else {}


def manifest(name: str, node: str, image: str, run_id: str, args: list[str],
             labels: dict[str, str] | None = None,
             spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {**(labels or {}), RUN_ID_LABEL: run_id,
                                                  ROLE_LABEL: "node-access"}},
            "spec": {"nodeName": node, "hostPID": True, "restartPolicy": "Never",
                     "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 0,
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": CONTAINER, "image": image,
                                     "imagePullPolicy": "IfNotPresent", "args": args,
                                     "securityContext": {"privileged": True,
                                                         "runAsUser": 0}}],
                     **(spec or {})}}


def _refused(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason
    except ValueError:
        message = exc.reason
    return f"{exc.status} {one_line(message, 300)}"


def _wait(kube, namespace: str, name: str, phases: tuple[str, ...], deadline_s: float) -> str:
    """The pod's phase once in `phases`; Unavailable when a container is stuck or the
    deadline passes (said with the last state seen)."""
    last = {"state": "no status yet"}

    def reached():
        status = kube.core.read_namespaced_pod(name, namespace,
                                               _request_timeout=kube.timeout).status
        if status.phase in phases:
            return status.phase
        for container in status.container_statuses or []:
            waiting = container.state.waiting if container.state else None
            if waiting is not None:
                last["state"] = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
                if waiting.reason in STUCK:
                    raise Unavailable(f"the node-access pod {namespace}/{name} cannot start: "
                                      f"{last['state']}")
        last["state"] = f"phase {status.phase}" if status.phase else last["state"]
        return None
    try:
        return wait_for(reached, deadline_s, f"pod {namespace}/{name}", interval_s=0.3)
    except WaitTimeout:
        raise Unavailable(f"the node-access pod {namespace}/{name} did not start within "
                          f"{deadline_s:.0f}s ({last['state']})") from None


def _create(kube, namespace: str, body: dict) -> None:
    try:
        kube.core.create_namespaced_pod(namespace, body, _request_timeout=kube.timeout)
    except ApiException as exc:
        if exc.status in (400, 403, 404, 409, 422):
            raise Unavailable(f"node access through a privileged pod in {namespace} was "
                              f"refused: {_refused(exc)} (--node-access-namespace names a "
                              f"namespace the cluster's policy lets privileged agents run in)"
                              ) from None
        raise


class NodePod:
    """A privileged hostPID pod on one node whose agent sleeps; commands run in it through
    exec (pods/exec in its namespace)."""

    def __init__(self, kube, access: NodePodAccess, node: str, name: str, run_id: str,
                 labels: dict[str, str] | None = None) -> None:
        self.kube, self.access, self.node, self.name = kube, access, node, name
        self.run_id, self.labels = run_id, labels

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef("v1", "Pod", self.access.namespace, self.name)

    def describe(self) -> str:
        pulled = (f", pulled with the pull secret {self.access.namespace}/"
                  f"{self.access.pull_secret}" if self.access.pull_secret else "")
        return (f"privileged pod {self.access.namespace}/{self.name} on {self.node} ({HOW}; "
                f"image {self.access.image}{pulled})")

    def start(self, defer_undo: Callable[[Any], None],
              deadline_s: float = START_DEADLINE_S) -> "NodePod":
        spec = self.access.spec()   # the pull Secret (its own undo record) first
        defer_undo(self.ref)
        _create(self.kube, self.access.namespace,
                manifest(self.name, self.node, self.access.image, self.run_id, ["sleep"],
                         self.labels, spec))
        phase = _wait(self.kube, self.access.namespace, self.name,
                      ("Running", "Succeeded", "Failed"), deadline_s)
        if phase != "Running":
            raise Unavailable(f"the node-access pod {self.access.namespace}/{self.name} "
                              f"ended at once ({phase})")
        return self

    def agent(self, *args: str, timeout_s: float = 30.0) -> str:
        """Run the agent with `args` in the pod; its stdout, or RuntimeError with stderr."""
        result = exec_in_pod(self.kube, self.access.namespace, self.name, CONTAINER,
                             [AGENT, *args], timeout_s=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} in {self.access.namespace}/{self.name} "
                               f"failed (exit {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()[:300]}")
        return result.stdout

    def delete(self) -> None:
        self.kube.delete_object(self.ref)


def run_once(kube, access: NodePodAccess, node: str, run_id: str, args: list[str],
             deadline_s: float = START_DEADLINE_S) -> str:
    """A one-shot privileged pod running the agent with `args` on `node`: its log once it
    Succeeded; RuntimeError (with the log) when it Failed. The pod carries the run id label
    (a sweep finds it if this process dies) and is deleted in every case."""
    name = f"kp-node-{run_id}-{secrets.token_hex(3)}"[:63].rstrip("-")
    ref = ObjectRef("v1", "Pod", access.namespace, name)
    _create(kube, access.namespace, manifest(name, node, access.image, run_id, args,
                                             spec=access.spec()))
    try:
        phase = _wait(kube, access.namespace, name, ("Succeeded", "Failed"), deadline_s)
        log = kube.core.read_namespaced_pod_log(name, access.namespace, container=CONTAINER,
                                                _request_timeout=kube.timeout)
    finally:
        kube.delete_object(ref)
    if phase != "Succeeded":
        raise RuntimeError(f"{args[0]} in pod {access.namespace}/{name} on {node} failed: "
                           f"{log.strip()[:300]}")
    return log


def unplant(kube, planted) -> bool:
    """Remove a kubeprobe.journal.PlantedFile whose node access is `pod://<node>`: True if it
    was there. Needs the API (the sweep without a cluster lists it instead)."""
    if kube is None:
        raise RuntimeError("no cluster to start the node-access pod in")
    # The Secret the run pulled the image with, named (a kubelet that re-checks credentials
    # of images pulled with a secret wants it again; it is removed after planted files).
    named = ({"imagePullSecrets": [{"name": planted.pull_secret}]}
             if planted.pull_secret else {})
    access = NodePodAccess(planted.pod_namespace, planted.image,
                           (lambda _namespace: named) if named else None, planted.pull_secret)
    said = run_once(kube, access, planted.node, planted.run_id or "sweep",
                    ["node-unplant", planted.path])
    return said.strip().splitlines()[-1:] == ["removed"]
