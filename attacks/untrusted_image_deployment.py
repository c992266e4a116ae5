"""Create a Deployment whose pods use an untrusted image. Admission policies on pods refuse
it only at the ReplicaSet: `kubectl apply` succeeds, so the proof is in the ReplicaSet's
FailedCreate events, not in the apply result.

SUCCEEDED: the ReplicaSet created a pod.
BLOCKED:   the ReplicaSet's FailedCreate event carries an admission denial.
"""
from kubernetes import client, watch

from kubeprobe.apiwire import admission_mechanism
from kubeprobe.outcome import Authority, Observation
from kubeprobe.workloads import UNTRUSTED_IMAGE, create, pod_manifest

TARGETS = "apiserver"


def run(ctx, target, image=UNTRUSTED_IMAGE, deadline_s=30):
    namespace = ctx.namespace()
    name = ctx.unique_name("deploy")
    pod = pod_manifest(ctx, name, image)
    template = {"metadata": {"labels": {**ctx.labels, "app": name}}, "spec": pod["spec"]}
    body = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": ctx.labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": template}}
    apps = client.AppsV1Api(ctx.kube.api_client)
    what = f"create a Deployment with {image}"
    created, refused = create(ctx, what, "deployment", namespace, body,
                              apps.create_namespaced_deployment,
                              apps.delete_namespaced_deployment)
    if refused:
        return refused  # refused at the Deployment itself: stronger than required
    # Watch this namespace's events and pods: whichever says first decides. Bounded.
    stream = watch.Watch()
    try:
        for item in stream.stream(ctx.kube.core.list_namespaced_event, namespace,
                                  timeout_seconds=deadline_s,
                                  _request_timeout=(ctx.kube.timeout[0], deadline_s + 5)):
            event = item["object"]
            involved = event.involved_object
            if involved.kind == "ReplicaSet" and involved.name.startswith(name):
                if event.reason == "FailedCreate" and admission_mechanism(event.message or ""):
                    mechanism = admission_mechanism(event.message)
                    return Observation.blocked(
                        Authority.ADMISSION_DENIAL,
                        f"{what}: the Deployment was stored, its ReplicaSet was denied by "
                        f"{mechanism}", mechanism=mechanism, event=event.message[:500])
                if event.reason == "SuccessfulCreate":
                    return Observation.succeeded(f"{what}: the ReplicaSet created a pod "
                                                 f"({event.message})")
    finally:
        stream.stop()
    return Observation.inconclusive(f"{what}: no ReplicaSet event within {deadline_s}s")
