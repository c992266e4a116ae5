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
        attempt = exec_in_component(ctx, component, container, command)
        if isinstance(attempt, Observation):
            return attempt
        what, result = attempt
        if result.not_found:
            tried.append(f"{command[0]}: not in the {container} image")
            continue
        return Observation.succeeded(f"{what}: the process ran (exit {result.returncode})",
                                     method="kubectl exec through the API server",
                                     nonce=ctx.nonce, tried=tried,
                                     stdout=result.stdout[:200], stderr=result.stderr[:200])
    return Observation.inconclusive(f"none of the candidate binaries exists in the {container} "
                                    "container", tried=tried)
