"""The pod vantage point: the Go agent (agent/main.go) run inside a throwaway pod.

The agent performs a `Probe` exactly like net.RunnerTransport and prints the same `Exchange`
JSON, so attacks are classified by the same code from both vantage points. Probes travel on
the exec's stdin (one JSON line), never in argv: tokens and keys stay out of audit events.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from kubernetes import watch
from kubernetes.stream import stream

from kubeprobe import images
from kubeprobe.context import RUN_ID_LABEL, Unavailable
from kubeprobe.journal import ObjectRef
from kubeprobe.net import Exchange, Probe
from kubeprobe.resources import data

AGENT_DIR = data("agent")
AGENT_SOURCES = ("go.mod", "main.go")
AGENT_REPOSITORY = "kubeprobe.local/agent"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubeprobe" / "agent"


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in AGENT_SOURCES:
        digest.update((AGENT_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def agent_image_ref() -> str:
    """Immutable tag: the hash of the agent's sources. Never pulled."""
    return f"{AGENT_REPOSITORY}:{source_hash()}"


def build_agent() -> Path:
    """Static binary, cached per source hash."""
    out = cache_dir() / source_hash() / "kubeprobe-agent"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
        done = subprocess.run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out),
                               "."], cwd=AGENT_DIR, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the agent failed: {done.stderr.strip()[-500:]}")
    return out


def build_agent_image() -> Path:
    """A docker-archive with only the static agent, run as uid 65532."""
    tar = cache_dir() / source_hash() / "agent-image.tar"
    if not tar.is_file():
        images.save_image(agent_image_ref(), {"kubeprobe-agent": images.File(
            host_path=build_agent(), mode=0o755)}, tar, entrypoint=["/kubeprobe-agent"],
            cmd=["sleep"])
    return tar


class LocalAgentTransport:
    """The agent as a local subprocess: the parity self-test and benchmarks use it."""
    vantage = "agent-local"

    def __init__(self, binary: Path | None = None) -> None:
        self.binary = binary or build_agent()

    def exchange(self, probe: Probe) -> Exchange:
        done = subprocess.run([str(self.binary), "probe"], input=json.dumps(probe.to_json()) + "\n",
                              capture_output=True, text=True, timeout=probe.connect_timeout
                              + probe.read_timeout + 10,
                              env={"KUBEPROBE_VANTAGE": self.vantage})
        if done.returncode != 0:
            raise RuntimeError(f"agent failed: {done.stderr.strip()}")
        return Exchange.from_json(json.loads(done.stdout))


class PodTransport:
    """Probes sent from a pod in the run's namespace: the compromised-workload position."""
    vantage = "pod"

    def __init__(self, kube, namespace: str, image: str, run_id: str, defer_undo,
                 deadline_s: float = 60.0, node: str | None = None,
                 spec: dict | None = None) -> None:
        self.kube, self.namespace, self.image = kube, namespace, image
        self.node = node
        # The probe image's pod-spec additions (imagePullSecrets) and what the evidence says.
        self.spec = spec or {}
        self.image_note = "".join(
            f"the vantage pod's probe image is pulled with the pull secret {namespace}/"
            f"{s['name']} (--probe-image-pull-secret)"
            for s in self.spec.get("imagePullSecrets", [])[:1]) or None
        # one vantage pod per node it is placed on (multi-node), else the run's single one
        suffix = "" if node is None else "-" + hashlib.sha256(node.encode()).hexdigest()[:8]
        self.name = f"kp-vantage-{run_id}{suffix}"
        self.vantage = "pod" if node is None else f"pod on {node}"
        self.run_id, self.defer_undo, self.deadline_s = run_id, defer_undo, deadline_s

    def start(self) -> "PodTransport":
        core = self.kube.core
        self.defer_undo(ObjectRef("v1", "Pod", self.namespace, self.name))
        security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True, "runAsUser": 65532,
                    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.name, "labels": {RUN_ID_LABEL: self.run_id,
                                                           "kubeprobe.io/role": "vantage"}},
                "spec": {"containers": [{"name": "agent", "image": self.image,
                                         "imagePullPolicy": "IfNotPresent",
                                         "args": ["sleep"], "securityContext": security}],
                         "terminationGracePeriodSeconds": 0, **self.spec}}
        if self.node is not None:
            # Placed by name (no scheduler): a control plane's NoSchedule taint does not keep
            # the attacker's position off it; NoExecute taints are tolerated for the same reason.
            body["spec"]["nodeName"] = self.node
            body["spec"]["tolerations"] = [{"operator": "Exists"}]
        core.create_namespaced_pod(self.namespace, body, _request_timeout=self.kube.timeout)
        self._wait_running()
        return self

    def _wait_running(self) -> None:
        events = watch.Watch()
        last = "no status yet"
        try:
            for item in events.stream(self.kube.core.list_namespaced_pod, self.namespace,
                                      field_selector=f"metadata.name={self.name}",
                                      timeout_seconds=int(self.deadline_s)):
                pod = item["object"]
                if pod.status.phase == "Running":
                    return
                waiting = [c.state.waiting for c in pod.status.container_statuses or []
                           if c.state and c.state.waiting]
                if waiting:
                    last = f"{waiting[0].reason}: {waiting[0].message or ''}".strip(": ")
        finally:
            events.stop()
        raise Unavailable(f"the vantage pod {self.namespace}/{self.name} did not start within "
                          f"{self.deadline_s:.0f}s ({last}); image {self.image}")

    def exchange(self, probe: Probe) -> Exchange:
        ws = stream(self.kube.exec_core().connect_get_namespaced_pod_exec, self.name,
                    self.namespace,
                    container="agent",
                    # The nonce in argv lets a run-time detector's alert name this attack.
                    command=["/kubeprobe-agent", "probe", f"--kubeprobe-nonce={probe.nonce}"],
                    stdin=True,
                    stdout=True, stderr=True, tty=False, _preload_content=False)
        try:
            ws.write_stdin(json.dumps(probe.to_json()) + "\n")
            ws.run_forever(timeout=probe.connect_timeout + probe.read_timeout + 10)
            out, err = ws.read_stdout() or "", ws.read_stderr() or ""
        finally:
            ws.close()
        if not out.strip():
            raise RuntimeError(f"the agent in {self.name} answered nothing: {err.strip()[:300]}")
        return Exchange.from_json(json.loads(out.strip().splitlines()[-1]))


def pod_transport_for_suite(suite, node: str | None = None) -> PodTransport:
    """The suite's pod vantage: the lab/kind were given the agent image; an existing cluster
    needs --probe-image (pushed to a registry it can pull from)."""
    image = suite.probe_image
    if image is None:
        raise Unavailable("no probe image for this target (pass --probe-image)")
    namespace = suite.namespace.ensure()
    return PodTransport(suite.kube, namespace, image, suite.run_id, suite.defer_undo,
                        node=node, spec=suite.probe_image_pod_spec(namespace)).start()
