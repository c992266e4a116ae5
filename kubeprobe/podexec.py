"""Run a command inside an existing container through the API server (`kubectl exec`): the
way an attacker holding pods/exec starts an unexpected process in a kube-system container.
Static (mirror) pods accept exec like any other pod; they refuse ephemeral containers."""
from __future__ import annotations

import json
from dataclasses import dataclass

from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL


@dataclass
class ExecResult:
    command: list[str]
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def not_found(self) -> bool:
        """The binary does not exist in the image (distroless)."""
        text = (self.stderr + self.stdout).lower()
        return "executable file not found" in text or "no such file or directory" in text


def exec_in_pod(kube, namespace: str, pod: str, container: str, command: list[str],
                timeout_s: float = 15.0) -> ExecResult:
    ws = stream(kube.core.connect_get_namespaced_pod_exec, pod, namespace, container=container,
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
