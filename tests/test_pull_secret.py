"""--probe-image-pull-secret: the file check, the Secret manifest, and that every pod the
suite starts with the probe image names the Secret made (once, journalled first) in its
namespace."""
import base64
import json
import threading
from types import SimpleNamespace

import pytest
from kubernetes.client.rest import ApiException

from kubeprobe import nodepod
from kubeprobe.context import RUN_ID_LABEL, Unavailable
from kubeprobe.journal import KINDS, ObjectRef, PlantedFile, undo_from_json
from kubeprobe.workloads import ProbeImagePullSecret, probe_image_pod_spec, read_docker_config

CONFIG = {"auths": {"registry.example:5443": {"auth": base64.b64encode(b"u:pw").decode()}}}


def test_read_docker_config_accepts_what_docker_login_writes(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    content, why = read_docker_config(path)
    assert why is None and json.loads(content) == CONFIG


@pytest.mark.parametrize("text", ["", "{", "[]", '{"auths": []}', '{"auths": {}}',
                                  '{"credHelpers": {"r": "x"}}'])
def test_read_docker_config_refuses_without_showing_content(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    content, why = read_docker_config(path)
    assert content is None and why and (not text or text not in why)


def test_secret_manifest():
    secret = ProbeImagePullSecret(json.dumps(CONFIG).encode(), "/x/config.json", "run-1")
    body = secret.manifest("falco")
    assert body["type"] == "kubernetes.io/dockerconfigjson"
    assert body["metadata"]["name"] == "kp-pull-run-1" and body["metadata"]["namespace"] == "falco"
    assert body["metadata"]["labels"][RUN_ID_LABEL] == "run-1"
    assert json.loads(base64.b64decode(body["data"][".dockerconfigjson"])) == CONFIG
    assert "pw" not in repr(secret) and "dTpwdw" not in repr(secret)
    assert "Secret" in KINDS and KINDS["Secret"].namespaced   # what a sweep lists


class FakeCore:
    def __init__(self, refuse=None):
        self.created, self.refuse, self.lock = [], refuse, threading.Lock()

    def create_namespaced_secret(self, namespace, body, _request_timeout=None):
        if self.refuse:
            raise ApiException(status=self.refuse, reason="Forbidden")
        with self.lock:
            self.created.append((namespace, body["metadata"]["name"]))


def test_secret_made_once_per_namespace_undo_first_thread_safe():
    core = FakeCore()
    kube = SimpleNamespace(core=core, timeout=5)
    order = []
    core_create = core.create_namespaced_secret

    def create(namespace, body, _request_timeout=None):
        order.append(("create", namespace))
        core_create(namespace, body, _request_timeout)
    core.create_namespaced_secret = create
    undos = []

    def defer_undo(undo):
        undos.append(undo)
        order.append(("undo", undo.namespace))
    secret = ProbeImagePullSecret(b'{"auths": {"r": {}}}', "f", "run-2")
    specs = []
    threads = [threading.Thread(target=lambda ns=ns: specs.append(
        probe_image_pod_spec(secret, kube, ns, defer_undo))) for ns in ["a", "b"] * 8]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(core.created) == [("a", "kp-pull-run-2"), ("b", "kp-pull-run-2")]
    assert sorted(undos, key=lambda u: u.namespace) == [
        ObjectRef("v1", "Secret", "a", "kp-pull-run-2"),
        ObjectRef("v1", "Secret", "b", "kp-pull-run-2")]
    for ns in "ab":
        assert order.index(("undo", ns)) < order.index(("create", ns))
    assert all(s == {"imagePullSecrets": [{"name": "kp-pull-run-2"}]} for s in specs)
    assert len(specs) == 16
    assert probe_image_pod_spec(None, kube, "a", defer_undo) == {}


def test_secret_refused_is_one_line_without_content():
    kube = SimpleNamespace(core=FakeCore(refuse=403), timeout=5)
    secret = ProbeImagePullSecret(b'{"auths": {"r": {"auth": "c2VjcmV0"}}}', "f", "run-3")
    with pytest.raises(Unavailable) as refused:
        secret.ensure(kube, "falco", lambda undo: None)
    assert "falco/kp-pull-run-3" in str(refused.value) and "c2VjcmV0" not in str(refused.value)


def test_node_access_pod_names_the_secret():
    spec = {"imagePullSecrets": [{"name": "kp-pull-run-4"}]}
    access = nodepod.NodePodAccess("falco", "r/agent@sha256:" + "a" * 64,
                                   lambda namespace: spec, "kp-pull-run-4")
    body = nodepod.manifest("kp-node", "node1", access.image, "run-4", ["sleep"],
                            spec=access.spec())
    assert body["spec"]["imagePullSecrets"] == [{"name": "kp-pull-run-4"}]
    assert body["spec"]["containers"][0]["securityContext"]["privileged"] is True
    pod = nodepod.NodePod(None, access, "node1", "kp-node", "run-4")
    assert "pulled with the pull secret falco/kp-pull-run-4" in pod.describe()
    plain = nodepod.manifest("kp-node", "node1", access.image, "run-4", ["sleep"])
    assert "imagePullSecrets" not in plain["spec"]


def test_planted_file_keeps_the_pull_secret_for_its_removal_pod():
    cid = "c" * 64
    planted = PlantedFile("node1", "pod://node1", cid,
                          f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{cid}/rootfs"
                          f"/tmp/kubeprobe-0a1b2c3d", "p", "c", "r/agent@sha256:" + "a" * 64,
                          "falco", "run-5", "kp-pull-run-5")
    assert undo_from_json(json.loads(json.dumps(planted.to_json()))) == planted
