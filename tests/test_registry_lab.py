"""The lab's registry and signature admission, end to end on the hardened lab (`lab` mark):

- the registry answers an anonymous manifest request 401 with a Basic challenge and the same
  request with the lab's credentials 200 (REGISTRY-01's evidence);
- the kubelet pulled the signed sample with the imagePullSecret (the puller pod runs it,
  its imageID is the digest the registry holds), and policy-controller's own image came from
  the registry the same way;
- policy-controller denies the unsigned sample for its signature (kubeprobe-signed named),
  the foreign-key sample likewise, the unscanned and critical samples for the scan policy
  only, and admits the trusted one;
- `kubeprobe image publish` pushes the probe image to the lab registry with the lab's
  credentials, signs it with the lab key and prints a digest reference the registry
  serves; policy-controller then finds a valid signature on it (only the scan attestation,
  which publish does not make, is missing).
The weak lab's anonymous pull is proven by `lab up` itself (the puller pod must run).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
from argparse import Namespace

import pytest

from kubeprobe import publish
from kubeprobe.lab import build, cluster, registry, signing

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
              pytest.mark.skipif(build.read_stamp() is None, reason="lab not built")]


@pytest.fixture(scope="module")
def lab():
    if cluster.status() is not None:
        pytest.skip("a lab is already running; not tearing it down from a test")
    try:
        yield cluster.up("hardened")
    finally:
        cluster.down()


def kubectl(state, *args, input=None):
    return subprocess.run([os.path.join(build.read_stamp()["k8s_bin"], "kubectl"),
                           "--kubeconfig", str(state.kubeconfig), *args], input=input,
                          capture_output=True, text=True, timeout=60)


def dry_run_pod(state, image):
    body = registry.puller_manifests(registry.RegistryInfo("", "", False, "", ""), image)[-1]
    body["metadata"] = {"name": "kp-selftest-dry", "namespace": registry.NAMESPACE}
    return kubectl(state, "create", "--dry-run=server", "-f", "-", input=json.dumps(body))


def test_registry_refuses_anonymous_and_serves_the_lab_credentials(lab):
    info = registry.RegistryInfo.from_json(lab.registry)
    assert info.authenticated and info.host == registry.HOST
    repository, digest = info.images["trusted"].split("/", 1)[1].split("@")
    anonymous = info.client(anonymous=True).get_manifest(repository, digest, anonymous=True)
    assert anonymous.status == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert info.client().manifest_digest(repository, digest) == digest


def test_kubelet_pulled_with_the_pull_secret(lab):
    info = registry.RegistryInfo.from_json(lab.registry)
    pod = json.loads(kubectl(lab, "-n", registry.NAMESPACE, "get", "pod", "registry-puller",
                             "-o", "json").stdout)
    assert pod["spec"]["imagePullSecrets"] == [{"name": registry.PULL_SECRET}]
    status = pod["status"]["containerStatuses"][0]
    assert status["state"].get("running") and status["imageID"].endswith(
        info.images["trusted"].split("@")[1])
    webhook = json.loads(kubectl(lab, "-n", signing.NAMESPACE, "get", "pods", "-o",
                                 "json").stdout)["items"]
    assert webhook and all(p["spec"]["imagePullSecrets"] == [{"name": registry.PULL_SECRET}]
                           for p in webhook)
    for p in webhook:
        image = p["spec"]["containers"][0]["image"]
        assert image.startswith(registry.HOST + "/kubeprobe/policy-controller@sha256:"), image
        status = p["status"]["containerStatuses"][0]
        assert status["ready"] and status["imageID"].endswith(image.split("@")[1]), status


@pytest.mark.parametrize("sample, denied_by", [
    ("unsigned", signing.SIGNED_POLICY), ("foreign", signing.SIGNED_POLICY),
    ("unscanned", signing.SCANNED_POLICY), ("critical", signing.SCANNED_POLICY)])
def test_policy_controller_denies_each_sample_for_its_own_reason(lab, sample, denied_by):
    info = registry.RegistryInfo.from_json(lab.registry)
    assert dry_run_pod(lab, info.images["trusted"]).returncode == 0
    denied = dry_run_pod(lab, info.images[sample])
    assert denied.returncode != 0 and f'admission webhook "{signing.WEBHOOK}" denied' in denied.stderr
    assert denied_by in denied.stderr, denied.stderr
    other = ({signing.SIGNED_POLICY, signing.SCANNED_POLICY} - {denied_by}).pop()
    assert other not in denied.stderr, denied.stderr


def test_image_publish_pushes_and_signs_the_probe_image(lab, capsys):
    info = registry.RegistryInfo.from_json(lab.registry)
    user, password = info.credentials()
    args = Namespace(registry=info.host, repository="kubeprobe/agent", tag=None,
                     username=user, password_stdin=True, ca_file=info.ca_file,
                     connect_to=info.address,
                     sign_key=cluster.LAB_DIR / "registry" / "cosign" / "keys" / "lab" / "cosign.key")
    args.ca_file = type(args.sign_key)(args.ca_file)
    assert publish.validate(args) is None
    reference = publish.publish(args, stdin=io.StringIO(password + "\n"))
    assert reference.startswith(f"{registry.HOST}/kubeprobe/agent@sha256:")
    digest = reference.split("@")[1]
    assert info.client().manifest_digest("kubeprobe/agent", digest) == digest
    answer = dry_run_pod(lab, reference)
    # the signature by the lab key is accepted; only the scan attestation is missing
    assert answer.returncode != 0 and signing.SCANNED_POLICY in answer.stderr, answer.stderr
    assert signing.SIGNED_POLICY not in answer.stderr, answer.stderr
