"""Acting as one node (impersonating system:node:<A> in group system:nodes), change another
node's object: its labels (e.g. to attract sensitive workloads), or the status of a pod bound
to it. Node B is a throwaway Node object with no kubelet behind it.

SUCCEEDED: the API server applied the change.
BLOCKED:   NodeRestriction refused it (`node "A" is not allowed to modify node "B"`, or
           `... can only update pod status for pods with spec.nodeName set to itself`).
           A refusal by the Node authorizer (HTTP 403) is reported as such.
"""
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeprobe.apiwire import classify_api_error
from kubeprobe.outcome import Observation
from kubeprobe.workloads import create, create_pod, impersonating, pod_manifest

TARGETS = "apiserver"


def _fake_node(ctx):
    name = ctx.unique_name("node")
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": ctx.labels},
            # NoSchedule, not NoExecute: the taint manager would evict the test pod at once.
            # No kubernetes.io/os label, so no DaemonSet (kube-proxy) lands on it.
            "spec": {"unschedulable": True,
                     "taints": [{"key": "kubeprobe.io/fake", "effect": "NoSchedule"}]}}
    core = ctx.kube.core
    created, refused = create(ctx, "create the throwaway node B", "node", None, body,
                              lambda b, **kw: core.create_node(b, **kw),
                              lambda n, **kw: core.delete_node(n, **kw))
    return name, refused


def run(ctx, target, change="labels"):
    core = ctx.kube.core
    node_a = core.list_node(label_selector="!kubeprobe.io/run-id", limit=1,
                            _request_timeout=ctx.kube.timeout).items[0].metadata.name
    node_b, refused = _fake_node(ctx)
    if refused:
        return Observation.inconclusive(f"could not create node B: {refused.summary}")
    as_node = client.CoreV1Api(impersonating(ctx, f"system:node:{node_a}", "system:nodes"))
    if change == "labels":
        what = f"node {node_a} labels node {node_b}"
        call = lambda: as_node.patch_node(  # noqa: E731
            node_b, {"metadata": {"labels": {"kubeprobe.io/hijacked": "true"}}},
            _request_timeout=ctx.kube.timeout)
    else:
        pod, refused = create_pod(ctx, "create a pod bound to node B",
                                  pod_manifest(ctx, ctx.unique_name("bound"), nodeName=node_b))
        if refused:
            return Observation.inconclusive(f"could not create the pod: {refused.summary}")
        what = f"node {node_a} rewrites the status of a pod bound to node {node_b}"
        call = lambda: as_node.patch_namespaced_pod_status(  # noqa: E731
            pod.metadata.name, pod.metadata.namespace,
            {"status": {"conditions": [{"type": "kubeprobe.io/Hijacked", "status": "True"}]}},
            _request_timeout=ctx.kube.timeout)
    try:
        call()
    except ApiException as exc:
        return classify_api_error(exc, what)
    return Observation.succeeded(f"{what}: the API server applied it", node_a=node_a,
                                 node_b=node_b)
