"""Run a command inside an existing container through the API server (`kubectl exec`): the
way an attacker holding pods/exec starts an unexpected process in a kube-system container.
Static (mirror) pods accept exec like any other pod; they refuse ephemeral containers."""
from __future__ import annotations

import json
from dataclasses import dataclass

from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL

from kubeprobe.apiwire import classify_api_error
from kubeprobe.outcome import Observation


@dataclass
class ExecResult:
    command: list[str]
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def not_found(self) -> bool:
        """The binary does not exist in the image (distroless): the runtime failed to start
        it, so there is no exit code. A program that ran and printed "no such file" itself
        (etcdctl dialling a missing socket) has one."""
        if self.returncode is not None:
            return False
        text = (self.stderr + self.stdout).lower()
        return "executable file not found" in text or "no such file or directory" in text


def exec_in_pod(kube, namespace: str, pod: str, container: str, command: list[str],
                timeout_s: float = 15.0) -> ExecResult:
    ws = stream(kube.exec_core().connect_get_namespaced_pod_exec, pod, namespace,
                container=container,
                command=command, stderr=True, stdin=False, stdout=True, tty=False,
                _preload_content=False, _request_timeout=kube.timeout)
    try:
        ws.run_forever(timeout=timeout_s)
        stdout, stderr = ws.read_stdout() or "", ws.read_stderr() or ""
        status_text = ws.read_channel(ERROR_CHANNEL)
    finally:
        ws.close()
    returncode, message = _exit_status(status_text)
    return ExecResult(command, returncode, stdout, stderr + message)


def _exit_status(text: str) -> tuple[int | None, str]:
    """The exec error channel carries a metav1.Status: Success, NonZeroExitCode with the code
    in details.causes, or a failure to start (e.g. the binary does not exist)."""
    if not text:
        return None, ""
    try:
        status = json.loads(text)
    except ValueError:
        return None, text
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1")), ""
    return None, status.get("message", text)


def component_pod(kube, component: str):
    """The kube-system pod labelled component=<component> (kubeadm's static pods), or None
    when there is none."""
    pods = kube.core.list_namespaced_pod("kube-system", label_selector=f"component={component}",
                                         _request_timeout=kube.timeout).items
    return pods[0] if pods else None


def node_address(pod, port: int) -> str | None:
    """host:port on the pod's node address (its hostIP; kubeadm's etcd listens there too),
    or None when the pod has no non-loopback hostIP yet."""
    host = pod.status.host_ip
    if not host or host.startswith("127.") or host == "::1":
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class ComponentExec:
    """A command that was started in a kube-system container, and how."""
    what: str
    result: ExecResult
    method: str = "kubectl exec through the API server"

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    def evidence(self, nonce: str, **extra) -> dict:
        return {"method": self.method, "nonce": nonce, "returncode": self.result.returncode,
                "output": self.output[-800:], **extra}


def exec_in_component(ctx, component: str, container: str, command: list[str],
                      method: str = "kubectl exec through the API server",
                      missing_ok: bool = False, pod=None):
    """Exec `command` (its `{nonce}` placeholders filled with the attack's nonce) in the
    component's kube-system container. Returns a ComponentExec, or an Observation when
    nothing ran: no such pod (INCONCLUSIVE) or refused by the API server (BLOCKED by
    401/403/admission) or the binary is not in the image (INCONCLUSIVE; with `missing_ok`
    the caller gets the ComponentExec and checks `result.not_found` itself). `pod`: the
    component's pod when the caller already looked it up (then exec goes to that pod)."""
    found = pod if pod is not None else component_pod(ctx.kube, component)
    if found is None:
        return Observation.inconclusive(f"no {component} pod in kube-system to exec into")
    name = found.metadata.name
    command = [part.format(nonce=ctx.nonce) for part in command]
    what = f"exec {' '.join(command)} in kube-system/{name}/{container}"
    try:
        result = exec_in_pod(ctx.kube, "kube-system", name, container, command)
    except ApiException as exc:
        return classify_api_error(exc, what)
    ctx.note(f"{what}: exit {result.returncode}"
             + (f" ({command[0]} does not exist in the image)" if result.not_found else ""))
    run = ComponentExec(what, result, method)
    if result.not_found and not missing_ok:
        return Observation.inconclusive(f"{command[0]} is not in the {container} image",
                                        **run.evidence(ctx.nonce))
    return run
