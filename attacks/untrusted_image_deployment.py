"""Create a Deployment whose pods use an untrusted image. Admission policies on pods refuse
it only at the ReplicaSet: `kubectl apply` succeeds, so the proof is in the ReplicaSet's
FailedCreate events, not in the apply result.

Differential proof: a twin Deployment, identical but for the trusted, digest-pinned image,
is created beside it (both for real: a dry run of a Deployment never reaches pod
admission). The twin's ReplicaSet must create its pod; only then does the attack's
FailedCreate count.

SUCCEEDED: the attack's ReplicaSet created a pod.
BLOCKED:   its FailedCreate event carries an admission denial, and the twin's ReplicaSet
           created its pod.
INCONCLUSIVE: the twin's ReplicaSet was refused too (who refused it is named), or no event
           came in time.
"""
from kubernetes import client, watch

from kubeprobe.apiwire import admission_mechanism
from kubeprobe.outcome import Authority, Observation
from kubeprobe.workloads import UNTRUSTED_IMAGE, create, pod_manifest, trusted_image

TARGETS = "apiserver"


def _deployment(ctx, name, image):
    pod = pod_manifest(ctx, name, image)
    template = {"metadata": {"labels": {**ctx.labels, "app": name}}, "spec": pod["spec"]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": ctx.labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": template}}


def _replica_set_events(ctx, namespace, names, deadline_s):
    """Deployment name -> its ReplicaSet's first decisive event (reason, message)."""
    found = {}
    stream = watch.Watch()
    try:
        for item in stream.stream(ctx.kube.core.list_namespaced_event, namespace,
                                  timeout_seconds=deadline_s,
                                  _request_timeout=(ctx.kube.timeout[0], deadline_s + 5)):
            event = item["object"]
            involved = event.involved_object
            owner = next((n for n in names if involved.kind == "ReplicaSet"
                          and involved.name.startswith(n + "-")), None)
            if owner and owner not in found and event.reason in ("FailedCreate",
                                                                 "SuccessfulCreate"):
                found[owner] = (event.reason, event.message or "")
            if len(found) == len(names):
                break
    finally:
        stream.stop()
    return found


def run(ctx, target, image=UNTRUSTED_IMAGE, deadline_s=30):
    namespace = ctx.namespace()
    apps = client.AppsV1Api(ctx.kube.api_client)
    twin, attack = ctx.unique_name("deploy"), ctx.unique_name("deploy")
    what = f"create a Deployment with {image}"
    for name, img, label in ((twin, trusted_image(ctx), "the twin Deployment (trusted image)"),
                             (attack, image, what)):
        created, refused = create(ctx, label, namespace, _deployment(ctx, name, img),
                                  apps.create_namespaced_deployment)
        if refused:
            # Refused at the Deployment itself: judge it like any other admission write.
            if name == twin:
                return Observation.inconclusive(f"the twin Deployment was refused: "
                                                f"{refused.summary}", refusal=refused.to_json())
            return refused
    events = _replica_set_events(ctx, namespace, [twin, attack], deadline_s)
    evidence = {"twin": {"deployment": f"{namespace}/{twin}", "image": trusted_image(ctx),
                         "replicaset event": events.get(twin)},
                "attack": {"deployment": f"{namespace}/{attack}", "image": image,
                           "replicaset event": events.get(attack)}}
    twin_event, attack_event = events.get(twin), events.get(attack)
    if twin_event is None or attack_event is None:
        return Observation.inconclusive(f"{what}: no decisive ReplicaSet event within "
                                        f"{deadline_s}s for the twin and the attack", **evidence)
    if twin_event[0] != "SuccessfulCreate":
        return Observation.inconclusive(
            f"the twin Deployment's ReplicaSet was refused too ({twin_event[1][:300]}): the "
            "attack's refusal proves nothing about the image policy", **evidence)
    if attack_event[0] == "SuccessfulCreate":
        return Observation.succeeded(f"{what}: the ReplicaSet created a pod "
                                     f"({attack_event[1]})", **evidence)
    mechanism = admission_mechanism(attack_event[1])
    if mechanism is None:
        return Observation.inconclusive(f"{what}: the ReplicaSet failed for another reason: "
                                        f"{attack_event[1][:300]}", **evidence)
    return Observation.blocked(
        Authority.ADMISSION_DENIAL,
        f"{what}: the Deployment was stored, its ReplicaSet was denied by {mechanism}; the "
        "twin with the trusted image got its pod", mechanism=mechanism, **evidence)
