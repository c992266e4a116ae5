"""Signed images in the lab: cosign keys, signatures, scan attestations, policy-controller.

Every lab (all profiles, so the weak lab is attacked with the same images):
    a cosign key pair made for this lab (the organisation's key) and a foreign one;
    samples pushed to the lab registry (kubeprobe/sample:<name>), each the pause binary plus a
    file naming it, so each has its own digest, each with exactly one violation:
        trusted    signed with the lab key, clean vulnerability attestation (lab key)
        unsigned   no signature;               clean attestation
        foreign    signed with the foreign key; clean attestation
        unscanned  signed with the lab key;    no attestation
        critical   signed with the lab key;    attestation listing a CRITICAL finding
    cosign runs offline: `--key`, `--tlog-upload=false` (no Rekor, no Fulcio).

Hardened lab only: the sigstore policy-controller (v0.13.1, built from its Go module into a
one-file image, pushed to the lab registry and pulled by the kubelet with the pull Secret) as
the admission webhook, started with `--disable-tuf` (no TUF root, nothing fetched), and two
ClusterImagePolicies over registry.kubeprobe.local:5443/**: `kubeprobe-signed` (an image
signature by the lab key) and `kubeprobe-scanned` (a cosign `vuln` attestation by the lab key
whose scanner result lists no CRITICAL vulnerability). Both must hold (every matching policy
is enforced); authorities without `ctlog` skip transparency-log verification. Images outside
the lab registry match no policy and are allowed (no-match-policy: allow): other controls'
positive twins are not this webhook's business.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kubeprobe import images
from kubeprobe.lab import gotools, host
from kubeprobe.lab.registry import (NAME as REGISTRY_NAME, NAMESPACE as REGISTRY_NAMESPACE,
                                    PULL_SECRET, RegistryInfo, RegistryLabError, apply,
                                    docker_config, pull_secret_manifest, puller_manifests, push,
                                    sample_image)

SAMPLES = ("trusted", "unsigned", "foreign", "unscanned", "critical")
SAMPLE_REPOSITORY = "kubeprobe/sample"
SIGNED_WITH = {"trusted": "lab", "unsigned": None, "foreign": "foreign", "unscanned": "lab",
               "critical": "lab"}
ATTESTATION = {"trusted": "clean", "unsigned": "clean", "foreign": "clean",
               "unscanned": None, "critical": "critical"}
VULN_PREDICATE_TYPE = "https://cosign.sigstore.dev/attestation/vuln/v1"
NAMESPACE = "cosign-system"
WEBHOOK = "policy.sigstore.dev"
SIGNED_POLICY = "kubeprobe-signed"
SCANNED_POLICY = "kubeprobe-scanned"
# Namespaces the webhook leaves alone: the system ones, its own, the detector's.
EXEMPT_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease", NAMESPACE, "falco"]


@dataclass
class Cosign:
    """cosign on this host, offline, against the lab registry (its CA, its credentials)."""
    binary: Path
    work: Path
    info: RegistryInfo

    def env(self) -> dict[str, str]:
        docker = self.work / "docker"
        docker.mkdir(parents=True, exist_ok=True)
        (docker / "config.json").write_text(json.dumps(docker_config(self.info)))
        (docker / "config.json").chmod(0o600)
        home = self.work / "home"
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                "DOCKER_CONFIG": str(docker), "SSL_CERT_FILE": self.info.ca_file,
                "COSIGN_PASSWORD": "", "COSIGN_YES": "true", "TUF_ROOT": str(home / "tuf")}

    def run(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run([str(self.binary), *args], env=self.env(), cwd=cwd or self.work,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise RegistryLabError(f"cosign {args[0]} failed: {' '.join(tail)}")
        return done.stdout

    def key_pair(self, name: str) -> tuple[Path, Path]:
        directory = self.work / "keys" / name
        directory.mkdir(parents=True, exist_ok=True)
        key, pub = directory / "cosign.key", directory / "cosign.pub"
        if not key.is_file():
            self.run("generate-key-pair", cwd=directory)
            key.chmod(0o600)
        return key, pub

    def sign(self, ref: str, key: Path) -> None:
        self.run("sign", "--key", str(key), "--tlog-upload=false", "--yes", ref)

    def attest(self, ref: str, key: Path, predicate: Path) -> None:
        self.run("attest", "--key", str(key), "--type", "vuln", "--predicate", str(predicate),
                 "--tlog-upload=false", "--yes", ref)


def vuln_predicate(critical: bool) -> dict:
    """A cosign `vuln` predicate as a scanner would attach in CI (trivy-shaped result)."""
    findings = [{"VulnerabilityID": "CVE-2024-0000-KUBEPROBE", "PkgName": "kubeprobe-sample",
                 "InstalledVersion": "1.0", "Severity": "CRITICAL",
                 "Title": "kubeprobe test finding (critical)"}] if critical else []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"invocation": {"parameters": None, "uri": "", "event_id": "", "builder.id": ""},
            "scanner": {"uri": "pkg:github/kubeprobe/lab-scanner@v1", "version": "1",
                        "db": {"uri": "", "version": ""},
                        "result": {"SchemaVersion": 2, "ArtifactName": "kubeprobe-sample",
                                   "Results": [{"Target": "kubeprobe-sample",
                                                "Vulnerabilities": findings}]}},
            "metadata": {"scanStartedOn": stamp, "scanFinishedOn": stamp}}


def sign_samples(info: RegistryInfo, pause_binary: Path, work: Path,
                 log=lambda line: None) -> dict:
    """Push, sign and attest the samples; returns {"images": {name: ref by name},
    "lab_public_key": PEM, "foreign_public_key": PEM}."""
    try:
        cosign = Cosign(gotools.cosign(log=log), work / "cosign", info)
    except gotools.ToolUnavailable as exc:
        raise RegistryLabError(str(exc)) from None
    keys = {"lab": cosign.key_pair("lab"), "foreign": cosign.key_pair("foreign")}
    predicates = {}
    for kind in ("clean", "critical"):
        predicates[kind] = work / "cosign" / f"vuln-{kind}.json"
        predicates[kind].write_text(json.dumps(vuln_predicate(kind == "critical"), indent=1))
    refs = {}
    for name in SAMPLES:
        tar = sample_image(name, pause_binary, work / f"sample-{name}.tar")
        ref = push(info, tar, SAMPLE_REPOSITORY, name)
        by_address = ref.replace(info.host, info.address, 1)  # cosign connects to the address
        if SIGNED_WITH[name]:
            cosign.sign(by_address, keys[SIGNED_WITH[name]][0])
        if ATTESTATION[name]:
            cosign.attest(by_address, keys["lab"][0], predicates[ATTESTATION[name]])
        refs[name] = ref
    log(f"cosign: {len(SAMPLES)} samples pushed, signed and attested (offline, no tlog)")
    return {"images": refs, "lab_public_key": keys["lab"][1].read_text(),
            "foreign_public_key": keys["foreign"][1].read_text()}


# -- policy-controller (hardened) -----------------------------------------------------------
def policy_controller_image(binary: Path, ca_file: str, out: Path) -> Path:
    return images.save_image(f"kubeprobe.local/policy-controller:{gotools.POLICY_CONTROLLER.version}",
                             {"webhook": images.File(host_path=binary, mode=0o755),
                              "etc/ssl/certs/ca-certificates.crt": Path(ca_file).read_bytes()},
                             out, entrypoint=["/webhook"])


def _crd(plural: str, kind: str) -> dict:
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.policy.sigstore.dev",
                         "labels": {"policy.sigstore.dev/release": "v0.13.1"}},
            "spec": {"group": "policy.sigstore.dev", "scope": "Cluster",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                               "categories": ["all", "sigstore"]},
                     "versions": [{"name": v, "served": True, "storage": v == "v1alpha1",
                                   "schema": schema, "subresources": {"status": {}}}
                                  for v in ("v1alpha1", "v1beta1")]}}


def policy_controller_manifests(image: str, info: RegistryInfo, node_ip: str) -> list[dict]:
    """The webhook's objects (kubeprobe's own minimal set, following upstream's config/)."""
    ns = NAMESPACE
    names = [WEBHOOK, "validating.clusterimagepolicy.sigstore.dev",
             "defaulting.clusterimagepolicy.sigstore.dev"]
    cluster_rules = [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
         "verbs": ["list", "watch"]},
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations",
                       "validatingwebhookconfigurations/finalizers",
                       "mutatingwebhookconfigurations/finalizers"],
         "verbs": ["get", "update", "delete"], "resourceNames": names},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"], "resourceNames": [ns]},
        {"apiGroups": [""], "resources": ["namespaces/finalizers"], "verbs": ["update"],
         "resourceNames": [ns]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["list", "watch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "update"], "resourceNames": ["clusterimagepolicies.policy.sigstore.dev",
                                                      "trustroots.policy.sigstore.dev"]},
        {"apiGroups": ["policy.sigstore.dev"],
         "resources": ["clusterimagepolicies", "clusterimagepolicies/status", "trustroots",
                       "trustroots/status"],
         "verbs": ["get", "list", "update", "watch", "patch"]},
        # k8schain: pull secrets named by pods or their ServiceAccounts
        {"apiGroups": [""], "resources": ["serviceaccounts", "secrets"], "verbs": ["get"]}]
    ns_rules = [
        {"apiGroups": [""], "resources": ["configmaps", "secrets"],
         "verbs": ["get", "list", "update", "watch", "create", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "list", "create", "update", "delete", "patch", "watch"]}]
    subject = [{"kind": "ServiceAccount", "name": "webhook", "namespace": ns}]
    selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                      "values": EXEMPT_NAMESPACES}]}
    service = {"service": {"name": "webhook", "namespace": ns}}
    hook = {"name": WEBHOOK, "admissionReviewVersions": ["v1"], "clientConfig": service,
            "failurePolicy": "Fail", "sideEffects": "None", "timeoutSeconds": 25,
            "namespaceSelector": selector}
    cip_hook = {"admissionReviewVersions": ["v1"], "clientConfig": service,
                "failurePolicy": "Fail", "matchPolicy": "Equivalent", "sideEffects": "None"}
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "runAsNonRoot": True, "runAsUser": 65532, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}}
    probe = {"failureThreshold": 6, "periodSeconds": 1,
             "httpGet": {"scheme": "HTTPS", "port": 8443,
                         "httpHeaders": [{"name": "k-kubelet-probe", "value": "webhook"}]}}
    config = lambda name, data: {"apiVersion": "v1", "kind": "ConfigMap",  # noqa: E731
                                 "metadata": {"name": name, "namespace": ns}, "data": data}
    docker_secret = pull_secret_manifest(info, ns)
    registry_config = {"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "registry-config", "namespace": ns},
                       "stringData": {"config.json": json.dumps(docker_config(info))}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "webhook", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"role": "webhook"}},
                 "template": {
                     "metadata": {"labels": {"role": "webhook"}},
                     "spec": {
                         "serviceAccountName": "webhook",
                         "imagePullSecrets": [{"name": PULL_SECRET}],
                         # No DNS for it in the lab (no CoreDNS; the node's resolver does not
                         # answer the pod network): a closed local port makes every lookup fail
                         # at once instead of after resolver timeouts (the mutating webhook
                         # tries to resolve every tag it sees), and the registry's name is
                         # pinned to the node address.
                         "dnsPolicy": "None",
                         "dnsConfig": {"nameservers": ["127.0.0.1"],
                                       "options": [{"name": "attempts", "value": "1"},
                                                   {"name": "timeout", "value": "1"}]},
                         "hostAliases": [{"ip": node_ip, "hostnames": [REGISTRY_NAME]}],
                         "containers": [{
                             "name": "webhook", "image": image, "imagePullPolicy": "Always",
                             "args": ["--disable-tuf"],
                             "env": [{"name": "SYSTEM_NAMESPACE", "valueFrom": {"fieldRef": {
                                         "fieldPath": "metadata.namespace"}}},
                                     {"name": "CONFIG_LOGGING_NAME", "value": "config-logging"},
                                     {"name": "METRICS_DOMAIN", "value": "sigstore.dev/policy"},
                                     {"name": "WEBHOOK_NAME", "value": "webhook"},
                                     {"name": "HOME", "value": "/var/run/sigstore"},
                                     {"name": "DOCKER_CONFIG", "value": "/var/run/registry"}],
                             "securityContext": security,
                             "readinessProbe": probe,
                             "volumeMounts": [{"name": "home", "mountPath": "/var/run/sigstore"},
                                              {"name": "registry-config",
                                               "mountPath": "/var/run/registry",
                                               "readOnly": True}]}],
                         "terminationGracePeriodSeconds": 1,
                         "volumes": [{"name": "home", "emptyDir": {}},
                                     {"name": "registry-config",
                                      "secret": {"secretName": "registry-config"}}]}}}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        _crd("clusterimagepolicies", "ClusterImagePolicy"), _crd("trustroots", "TrustRoot"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "webhook", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "kubeprobe-policy-controller"}, "rules": cluster_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "kubeprobe-policy-controller"}, "subjects": subject,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "kubeprobe-policy-controller"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "kubeprobe-policy-controller", "namespace": ns}, "rules": ns_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "kubeprobe-policy-controller", "namespace": ns}, "subjects": subject,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "kubeprobe-policy-controller"}},
        config("config-policy-controller", {"no-match-policy": "allow"}),
        config("config-logging", {"loglevel.webhook": "info"}),
        config("config-observability", {}),
        # watched from start-up (a missing one stops the webhook); the reconcilers fill the
        # first two from the ClusterImagePolicies and TrustRoots
        config("config-image-policies", {}), config("config-sigstore-keys", {}),
        config("config-leader-election", {}),
        docker_secret, registry_config,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook-certs", "namespace": ns}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "webhook", "namespace": ns},
         "spec": {"ports": [{"port": 443, "targetPort": 8443}], "selector": {"role": "webhook"}}},
        deployment,
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": WEBHOOK}, "webhooks": [hook]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": WEBHOOK}, "webhooks": [{**hook, "reinvocationPolicy": "IfNeeded"}]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": names[2]}, "webhooks": [{**cip_hook, "name": names[2]}]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": names[1]}, "webhooks": [{**cip_hook, "name": names[1]}]},
    ]


REGO_NO_CRITICAL = """\
package sigstore
import rego.v1
default isCompliant := false
isCompliant if {
  input.predicateType == "%s"
  count([v | some r in input.predicate.scanner.result.Results; some v in r.Vulnerabilities; v.Severity == "CRITICAL"]) == 0
}
""" % VULN_PREDICATE_TYPE


def cluster_image_policies(registry_host: str, public_key: str) -> list[dict]:
    images_ = [{"glob": f"{registry_host}/**"}]
    key = {"data": public_key}
    return [
        {"apiVersion": "policy.sigstore.dev/v1alpha1", "kind": "ClusterImagePolicy",
         "metadata": {"name": SIGNED_POLICY},
         "spec": {"images": images_, "mode": "enforce",
                  "authorities": [{"name": "lab-key", "key": key}]}},
        {"apiVersion": "policy.sigstore.dev/v1alpha1", "kind": "ClusterImagePolicy",
         "metadata": {"name": SCANNED_POLICY},
         "spec": {"images": images_, "mode": "enforce",
                  "authorities": [{"name": "lab-key-scan", "key": key, "attestations": [
                      {"name": "no-critical-vulnerabilities", "predicateType": "vuln",
                       "policy": {"type": "rego", "data": REGO_NO_CRITICAL}}]}]}},
    ]


def install_policy_controller(info: RegistryInfo, kubectl, node_ip: str, work: Path,
                              refs: dict, public_keys: dict, log=lambda line: None) -> dict:
    """Build the webhook image, push it, deploy it, wait until it enforces; returns what the
    lab state records."""
    try:
        binary = gotools.ensure(gotools.POLICY_CONTROLLER, log=log)
    except gotools.ToolUnavailable as exc:
        raise RegistryLabError(str(exc)) from None
    tar = policy_controller_image(binary, info.ca_file, work / "policy-controller.tar")
    ref = push(info, tar, "kubeprobe/policy-controller", gotools.POLICY_CONTROLLER.version)
    apply(kubectl, policy_controller_manifests(ref, info, node_ip), "policy-controller")
    _wait_rollout(kubectl)
    # The ClusterImagePolicy webhooks must answer before a policy can be stored.
    host.wait_for(lambda: kubectl("apply", "-f", "-", input="\n---\n".join(
        json.dumps(d) for d in cluster_image_policies(info.host, public_keys["lab"])),
        check=False).returncode == 0, 60, "the ClusterImagePolicies to be accepted",
        interval_s=1)
    check = _wait_enforcing(kubectl, refs)
    log(f"policy-controller {gotools.POLICY_CONTROLLER.version} enforces {SIGNED_POLICY} and "
        f"{SCANNED_POLICY} ({check})")
    return {"webhook": WEBHOOK, "image": ref, "policies": [SIGNED_POLICY, SCANNED_POLICY],
            # its own namespace (a webhook must not gate its own pods) and the detector's
            "exempt_namespaces": [NAMESPACE, "falco"]}


def _wait_rollout(kubectl) -> None:
    done = kubectl("-n", NAMESPACE, "rollout", "status", "deployment/webhook", "--timeout=90s",
                   check=False, timeout=120)
    if done.returncode != 0:
        pods = kubectl("-n", NAMESPACE, "get", "pods", "-o", "json", check=False)
        detail = ""
        if pods.returncode == 0:
            for pod in json.loads(pods.stdout)["items"]:
                for c in pod["status"].get("containerStatuses") or []:
                    state = c.get("state") or {}
                    detail += json.dumps(state.get("waiting") or state.get("terminated") or {})
        logs = kubectl("-n", NAMESPACE, "logs", "deployment/webhook", "--previous", "--tail=5",
                       check=False)
        if logs.returncode != 0:
            logs = kubectl("-n", NAMESPACE, "logs", "deployment/webhook", "--tail=5", check=False)
        raise RegistryLabError(f"policy-controller did not become ready: "
                               f"{(done.stderr or done.stdout).strip()[-200:]} {detail[:300]}; "
                               f"its log: {(logs.stdout or logs.stderr).strip()[-1200:]}")


def _wait_enforcing(kubectl, refs: dict) -> str:
    """Dry-run the unsigned sample until the webhook denies it (and the trusted one is
    admitted): the policies are compiled and served."""
    def pod(name: str, image: str) -> str:
        body = puller_manifests(RegistryInfo("", "", False, "", ""), image)[-1]
        body["metadata"] = {"name": f"kp-enforce-{name}", "namespace": REGISTRY_NAMESPACE}
        return json.dumps(body)
    last = {}

    def enforcing():
        bad = kubectl("create", "--dry-run=server", "-f", "-", input=pod("unsigned", refs["unsigned"]),
                      check=False)
        good = kubectl("create", "--dry-run=server", "-f", "-", input=pod("trusted", refs["trusted"]),
                       check=False)
        last.update(bad=(bad.stderr or bad.stdout).strip(), good=(good.stderr or good.stdout).strip())
        return bad.returncode != 0 and WEBHOOK in bad.stderr and good.returncode == 0
    try:
        host.wait_for(enforcing, 90, "policy-controller to deny the unsigned sample",
                      interval_s=1)
    except host.WaitTimeout:
        raise RegistryLabError(f"policy-controller does not enforce: unsigned sample -> "
                               f"{last.get('bad', '')[:300]}; trusted sample -> "
                               f"{last.get('good', '')[:300]}") from None
    return "unsigned sample denied, trusted sample admitted"


def cleanup_keys(work: Path) -> None:
    shutil.rmtree(work / "cosign" / "home", ignore_errors=True)
