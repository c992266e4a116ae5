"""Start a process that is not the component's own inside a kube-system control-plane
container (intrusive): a shell if the image has one, else a binary that exists in the
distroless image (etcdctl in etcd). The command line carries the attack's nonce so the
detector's alert can be tied to this attack.

SUCCEEDED: the process ran (its exit status and output are the proof). The control expects
           the run-time detector to ALERT on it (Falco process allowlist rule).
BLOCKED:   the API server refused the exec (authorization or admission).
"""
from kubernetes.client.rest import ApiException

from kubeprobe.apiwire import classify_api_error
from kubeprobe.outcome import Observation
from kubeprobe.podexec import exec_in_pod

TARGETS = "apiserver"


def run(ctx, target, component="etcd", container="etcd",
        candidates=(["sh", "-c", "echo kubeprobe-{nonce}"],
                    ["etcdctl", "--endpoints=unix:///kubeprobe-{nonce}", "version"])):
    pods = ctx.kube.core.list_namespaced_pod("kube-system", label_selector=f"component={component}",
                                             _request_timeout=ctx.kube.timeout).items
    if not pods:
        return Observation.inconclusive(f"no {component} pod in kube-system to exec into")
    pod = pods[0].metadata.name
    tried = []
    for template in candidates:
        command = [part.format(nonce=ctx.nonce) for part in template]
        what = f"exec {' '.join(command)} in kube-system/{pod}/{container}"
        try:
            result = exec_in_pod(ctx.kube, "kube-system", pod, container, command)
        except ApiException as exc:
            return classify_api_error(exc, what)
        tried.append({"command": command, "returncode": result.returncode,
                      "stdout": result.stdout[:200], "stderr": result.stderr[:200]})
        if result.not_found:
            ctx.note(f"{command[0]} does not exist in the {container} image")
            continue
        return Observation.succeeded(f"{what}: the process ran (exit {result.returncode})",
                                     method="kubectl exec through the API server",
                                     nonce=ctx.nonce, tried=tried)
    return Observation.inconclusive(f"none of the candidate binaries exists in the {container} "
                                    "container", tried=tried)
