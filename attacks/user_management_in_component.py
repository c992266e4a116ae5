"""Run a user-management tool (`useradd`) inside a kube-system control-plane container
(intrusive, needs node access). Distroless images ship no such tool, so the attacker's own
copy is dropped into the container from the node (kubeprobe.plant: the kubeprobe agent
under the name `useradd`; it changes no user) and started through `kubectl exec`. Falco's
stock "User mgmt binaries" rule excludes containers; the generated rule does not. `tool`
must be a name the agent stands in for (userManagementNames in agent/main.go).

SUCCEEDED: the planted tool ran in the container (its output is the proof).
BLOCKED:   the API server refused the exec.
SKIP:      no node access for this target (only the lab and kind give it).
"""
from kubeprobe.outcome import Observation
from kubeprobe.plant import run_planted

TARGETS = "apiserver"


def run(ctx, target, component="etcd", container="etcd", tool="useradd"):
    started = run_planted(ctx, component, container, tool, ["kubeprobe-{nonce}"])
    if isinstance(started, Observation):
        return started
    evidence = started.evidence(ctx.nonce, stand_in=f"the kubeprobe agent named {tool} "
                                                 "(changes no user)")
    if started.result.returncode == 0 and f"standing in for {tool}" in started.result.stdout:
        return Observation.succeeded(f"{started.what}: {tool} ran in the container", **evidence)
    return Observation.inconclusive(f"{started.what}: the planted {tool} did not run", **evidence)
