"""Acting as one node (impersonating system:node:<A> in group system:nodes), change another
node's object: its labels (e.g. to attract sensitive workloads), or the status of a pod bound
to it. Node B is a throwaway Node object with no kubelet behind it.

Differential proof: the twin is the same change, by the same node identity, to what node A
may change: its own Node's labels, or the status of a pod bound to node A (both pods are the
suite's own). It must be admitted; both changes are dry runs (nothing is modified).

SUCCEEDED: the API server admitted the change to node B's object.
BLOCKED:   NodeRestriction refused it (`node "A" is not allowed to modify node "B"`, or
           `... can only update pod status for pods with spec.nodeName set to itself`) and
           admitted the twin. A refusal by the Node authorizer (HTTP 403) is reported as such.
"""
from kubernetes import client

from kubeprobe.admission import Write, differential
from kubeprobe.outcome import Observation
from kubeprobe.workloads import create, create_pod, impersonating, pod_manifest, trusted_image

TARGETS = "apiserver"
HIJACK_LABEL = {"metadata": {"labels": {"kubeprobe.io/hijacked": "true"}}}
HIJACK_STATUS = {"status": {"conditions": [{"type": "kubeprobe.io/Hijacked", "status": "True"}]}}


def _fake_node(ctx):
    name = ctx.unique_name("node")
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": ctx.labels},
            # NoSchedule, not NoExecute: the taint manager would evict the test pod at once.
            # No kubernetes.io/os label, so no DaemonSet (kube-proxy) lands on it.
            "spec": {"unschedulable": True,
                     "taints": [{"key": "kubeprobe.io/fake", "effect": "NoSchedule"}]}}
    core = ctx.kube.core
    created, refused = create(ctx, "create the throwaway node B", None, body, core.create_node)
    return name, refused


def _pod_bound_to(ctx, node):
    """Our own pod bound to `node` (never someone else's: a fallback to real writes would
    change it). On node A the kubelet tries to start it; it is deleted at the end."""
    pod, refused = create_pod(ctx, f"create a pod bound to node {node}",
                              pod_manifest(ctx, ctx.unique_name("bound"), trusted_image(ctx),
                                           nodeName=node))
    return (pod.metadata.name, pod.metadata.namespace, None) if pod else (None, None, refused)


def _write(what, request, call):
    return Write(what=what, request=request, send=call)


def run(ctx, target, change="labels"):
    core = ctx.kube.core
    timeout = ctx.kube.timeout
    node_a = core.list_node(label_selector="!kubeprobe.io/run-id", limit=1,
                            _request_timeout=timeout).items[0].metadata.name
    node_b, refused = _fake_node(ctx)
    if refused:
        return Observation.inconclusive(f"could not create node B: {refused.summary}")
    as_node = client.CoreV1Api(impersonating(ctx, f"system:node:{node_a}", "system:nodes"))
    if change == "labels":
        def label(node):
            return _write(f"node {node_a} labels node {node}", {"node": node, **HIJACK_LABEL},
                          lambda dry_run: as_node.patch_node(node, HIJACK_LABEL, dry_run=dry_run,
                                                             _request_timeout=timeout))
        twin, attack = label(node_a), label(node_b)
        property_under_test = "another node's Node object"
    else:
        pods = {}
        for node in (node_a, node_b):
            name, namespace, refused = _pod_bound_to(ctx, node)
            if refused:
                return Observation.inconclusive(f"could not create a pod bound to {node}: "
                                                f"{refused.summary}")
            pods[node] = (name, namespace)

        def status(node):
            name, namespace = pods[node]
            return _write(f"node {node_a} rewrites the status of pod {namespace}/{name} "
                          f"bound to node {node}", {"pod": f"{namespace}/{name}",
                                                    **HIJACK_STATUS},
                          lambda dry_run: as_node.patch_namespaced_pod_status(
                              name, namespace, HIJACK_STATUS, dry_run=dry_run,
                              _request_timeout=timeout))
        twin, attack = status(node_a), status(node_b)
        property_under_test = "a pod bound to another node"
    observation, _ = differential(ctx, property_under_test, twin, attack)
    observation.evidence.update(node_a=node_a, node_b=node_b)
    return observation
