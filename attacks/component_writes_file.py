"""Write a file inside a kube-system control-plane container, outside the directories the
component may write to (intrusive). etcd's image is distroless: the writer is `etcdctl
snapshot save`, which creates `<path>.part` (O_WRONLY|O_CREAT) and removes it again when the
snapshot cannot be taken. The endpoint is a unix socket that does not exist, so no data is
ever read from etcd and nothing stays behind in the container.

SUCCEEDED: etcdctl logged that it created the file (its own "created temporary db file"
           line, with the path carrying the attack's nonce). The control expects the
           run-time detector to ALERT (write outside allowed directories / below /etc).
BLOCKED:   the API server refused the exec.
INCONCLUSIVE: the file was not created (e.g. a read-only root filesystem: the log says
           why), or etcdctl is not in the image.
"""
from kubeprobe.outcome import Observation
from kubeprobe.podexec import exec_in_component

TARGETS = "apiserver"
CREATED = "created temporary db file"


def etcdctl_write(directory: str, nonce: str) -> tuple[str, list[str]]:
    """(file etcdctl creates, command line) for a write below `directory`."""
    path = f"{directory.rstrip('/')}/kubeprobe-{nonce}.db"
    return path + ".part", ["etcdctl", f"--endpoints=unix:///kubeprobe-{nonce}.sock",
                            "--dial-timeout=1s", "--command-timeout=1s", "snapshot", "save", path]


def run(ctx, target, directory="/tmp", component="etcd", container="etcd"):
    written, command = etcdctl_write(directory, ctx.nonce)
    started = exec_in_component(ctx, component, container, command)
    if isinstance(started, Observation):
        return started
    evidence = started.evidence(ctx.nonce, file=written)
    if CREATED in started.output and written in started.output:
        return Observation.succeeded(f"{started.what}: wrote {written} (etcdctl removed it again)",
                                     **evidence)
    return Observation.inconclusive(f"{started.what}: etcdctl did not report creating {written}",
                                    **evidence)
