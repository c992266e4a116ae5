"""Run a command inside an existing container through the API server (`kubectl exec`): the
way an attacker holding pods/exec starts an unexpected process in a kube-system container.
Static (mirror) pods accept exec like any other pod; they refuse ephemeral containers."""
from __future__ import annotations

from dataclasses import dataclass

from kubernetes.stream import stream


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
        stdout, stderr = ws.read_stdout(), ws.read_stderr()
        returncode = ws.returncode
    finally:
        ws.close()
    return ExecResult(command, returncode, stdout or "", stderr or "")
