"""Start a process that is not the component's own inside a kube-system control-plane
container (intrusive): a shell if the image has one, else a binary that exists in the
distroless image (etcdctl in etcd). The command line carries the attack's nonce so the
detector's alert can be tied to this attack.

SUCCEEDED: the process ran (its exit status and output are the proof). The control expects
           the run-time detector to ALERT on it (Falco process allowlist rule).
BLOCKED:   the API server refused the exec (authorization or admission).
"""
from kubeprobe.outcome import Observation
from kubeprobe.podexec import exec_in_component

TARGETS = "apiserver"


def run(ctx, target, component="etcd", container="etcd",
        candidates=(["sh", "-c", "echo kubeprobe-{nonce}"],
                    ["etcdctl", "--endpoints=unix:///kubeprobe-{nonce}", "version"])):
    tried = []
    for command in candidates:
        started = exec_in_component(ctx, component, container, command, missing_ok=True)
        if isinstance(started, Observation):
            return started
        if started.result.not_found:
            tried.append(f"{command[0]}: not in the {container} image")
            continue
        return Observation.succeeded(f"{started.what}: the process ran "
                                     f"(exit {started.result.returncode})",
                                     **started.evidence(ctx.nonce, tried=tried))
    return Observation.inconclusive(f"none of the candidate binaries exists in the {container} "
                                    "container", tried=tried)
