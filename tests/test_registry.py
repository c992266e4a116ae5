"""The private-registry control (REGISTRY-01), kubeprobe's OCI push client and the
supply-chain options, against a real distribution registry (v3.1.2, built from its Go module):
one with htpasswd authentication and TLS from a throwaway CA, one anonymous, both configured
the way the lab configures its own (kubeprobe/lab/registry.py), and one with distribution's
`silly` access controller (any credential is taken) over the anonymous one's storage.

The signature and scan controls (REGISTRY-02..05) need an admission webhook: the lab proves
them (tests/test_registry_lab.py, and the negative control on the hardened/weak/decoy labs).
"""
from __future__ import annotations

import json

import pytest

from attacks import registry_anonymous_pull, unverified_image_pod
from kubeprobe import images, oci, supplychain
from kubeprobe.context import Unavailable
from kubeprobe.outcome import Authority, Outcome
from tests import registryserver
from tests.conftest import endpoint


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    base = tmp_path_factory.mktemp("registries")
    started = {}
    try:
        started["htpasswd"] = registryserver.start(base / "htpasswd", authenticated=True)
        started["anonymous"] = registryserver.start(base / "anonymous", authenticated=False)
        tar = images.save_image("kubeprobe.local/selftest:1", {"hello": b"kubeprobe\n"},
                                base / "image.tar", entrypoint=["/hello"])
        for running in started.values():
            running.digest = running.client().push_archive(tar, "kubeprobe/selftest", "1")
        started["silly"] = registryserver.start(base / "silly", authenticated=False, silly=True,
                                                data=base / "anonymous" / "data")
        started["silly"].digest = started["anonymous"].digest
        yield started
    finally:
        for running in started.values():
            registryserver.stop(running)


def chain_for(running, credentials=True, image=None) -> supplychain.SupplyChain:
    ref = image or f"{running.host}/kubeprobe/selftest@{running.digest}"
    return supplychain.SupplyChain("options", registry_image=ref,
                                   registry_ca=str(running.ca_file),
                                   credentials=running.credentials if credentials else None)


def test_push_is_content_addressed_and_readable_with_credentials_only(registries):
    locked = registries["htpasswd"]
    anonymous = locked.client(anonymous=True).get_manifest("kubeprobe/selftest", locked.digest,
                                                           anonymous=True)
    assert anonymous.status == 401 and anonymous.error_code() == "UNAUTHORIZED"
    assert anonymous.headers["www-authenticate"].startswith("Basic ")
    authed = locked.client().get_manifest("kubeprobe/selftest", "1")
    assert authed.status == 200
    assert authed.headers["docker-content-digest"] == locked.digest == oci.sha256_digest(
        authed.body)
    manifest = authed.json()
    assert manifest["mediaType"] == oci.OCI_MANIFEST and len(manifest["layers"]) == 1
    # the same archive gives the same digest in the anonymous registry
    assert registries["anonymous"].digest == locked.digest
    with pytest.raises(oci.RegistryError, match="HTTP 401 UNAUTHORIZED"):
        locked.client(anonymous=True).push_blob("kubeprobe/other", b"x")


def test_anonymous_pull_refused_with_authenticated_twin_is_blocked(make_ctx, registries):
    running = registries["htpasswd"]
    ctx = make_ctx(control_id="REGISTRY-01", supply_chain=chain_for(running))
    seen = registry_anonymous_pull.run(ctx, endpoint("registry", 0))
    assert seen.outcome is Outcome.BLOCKED and seen.authority is Authority.HTTP_401
    assert seen.evidence["anonymous answer"]["status"] == 401
    twin = seen.evidence["twin (with the registry's credentials)"]
    assert twin["status"] == 200 and twin["docker-content-digest"] == running.digest


def test_anonymous_pull_from_an_open_registry_succeeds(make_ctx, registries):
    running = registries["anonymous"]
    ctx = make_ctx(control_id="REGISTRY-01", supply_chain=chain_for(running, credentials=False))
    seen = registry_anonymous_pull.run(ctx, endpoint("registry", 0))
    assert seen.outcome is Outcome.SUCCEEDED
    assert seen.evidence["anonymous answer"]["status"] == 200
    assert running.digest in seen.summary


def test_a_registry_that_takes_any_credential_fails_despite_its_challenge(make_ctx, registries):
    running = registries["silly"]
    anonymous = running.client(anonymous=True).get_manifest("kubeprobe/selftest", running.digest,
                                                            anonymous=True)
    assert anonymous.status == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer realm=")
    ctx = make_ctx(control_id="REGISTRY-01", supply_chain=chain_for(running, credentials=False))
    seen = registry_anonymous_pull.run(ctx, endpoint("registry", 0))
    assert seen.outcome is Outcome.SUCCEEDED, seen.summary
    assert seen.evidence["anonymous answer"]["status"] == 401
    forged = seen.evidence["made-up credentials answer"]
    assert forged["status"] == 200 and forged["docker-content-digest"] == running.digest
    assert f"kubeprobe-{ctx.nonce}" in seen.summary and "takes any credential" in seen.summary


def test_made_up_credentials_are_refused_by_htpasswd_and_said_in_the_evidence(make_ctx,
                                                                              registries):
    ctx = make_ctx(control_id="REGISTRY-01", supply_chain=chain_for(registries["htpasswd"]))
    seen = registry_anonymous_pull.run(ctx, endpoint("registry", 0))
    assert seen.outcome is Outcome.BLOCKED
    assert seen.evidence["made-up credentials answer"]["status"] == 401
    assert "made-up credentials HTTP 401" in seen.summary


def test_without_credentials_the_challenge_stands_alone_and_says_so(make_ctx, registries,
                                                                    monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))   # no docker config entry either
    ctx = make_ctx(control_id="REGISTRY-01",
                   supply_chain=chain_for(registries["htpasswd"], credentials=False))
    seen = registry_anonymous_pull.run(ctx, endpoint("registry", 0))
    assert seen.outcome is Outcome.BLOCKED and "not sent" in seen.evidence["twin"]


def test_a_missing_image_is_inconclusive_not_a_pass(make_ctx, registries):
    running = registries["htpasswd"]
    missing = f"{running.host}/kubeprobe/selftest@sha256:{'0' * 64}"
    ctx = make_ctx(control_id="REGISTRY-01", supply_chain=chain_for(running, image=missing))
    seen = registry_anonymous_pull.run(ctx, endpoint("registry", 0))
    assert seen.outcome is Outcome.INCONCLUSIVE and "404" in seen.summary


def test_untrusted_tls_is_inconclusive(make_ctx, registries):
    running = registries["htpasswd"]
    chain = supplychain.SupplyChain("options", registry_image=f"{running.host}/kubeprobe/"
                                    f"selftest@{running.digest}")   # system trust only
    seen = registry_anonymous_pull.run(make_ctx(supply_chain=chain), endpoint("registry", 0))
    assert seen.outcome is Outcome.INCONCLUSIVE and "TLS" in seen.summary


def test_controls_skip_with_the_reason_when_nothing_is_named(make_ctx):
    with pytest.raises(Unavailable, match="--registry-image"):
        registry_anonymous_pull.run(make_ctx(), endpoint("registry", 0))
    with pytest.raises(Unavailable, match="--unsigned-image"):
        unverified_image_pod.run(make_ctx(), endpoint("apiserver", 0), image="unsigned")
    only_unsigned = supplychain.from_options(None, None, {"unsigned": "r.example/a:1"})
    with pytest.raises(Unavailable, match="--signed-image"):
        unverified_image_pod.run(make_ctx(supply_chain=only_unsigned),
                                 endpoint("apiserver", 0), image="unsigned")
    with pytest.raises(Unavailable, match="--scan-rejected-image"):
        unverified_image_pod.run(make_ctx(supply_chain=only_unsigned),
                                 endpoint("apiserver", 0), image="critical")


@pytest.mark.parametrize("ref, ok", [
    ("registry.example:5443/team/app@sha256:" + "a" * 64, True),
    ("localhost:5000/app:v1", True),
    ("ghcr.io/org/app", True),
    ("nginx:latest", False),                 # no registry host
    ("library/nginx", False),
    ("registry.example/App:1", False),       # uppercase repository
    ("registry.example/app@sha256:abc", False),
])
def test_image_references_need_a_registry_host(ref, ok):
    if ok:
        assert str(supplychain.parse_image(ref)) == ref
    else:
        with pytest.raises(ValueError):
            supplychain.parse_image(ref)


def test_bad_supply_chain_options_are_one_line(tmp_path):
    assert supplychain.check_options("nginx", None, {}).startswith("--registry-image:")
    assert supplychain.check_options(None, None, {"foreign": "x"}).startswith(
        "--foreign-signed-image:")
    assert "--registry-ca" in supplychain.check_options(None, tmp_path / "no.pem", {})
    assert supplychain.check_options("r.example/a:1", None, {"signed": "r.example/a:2"}) is None


def test_bearer_challenge_parsing():
    scheme, params = oci.parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull"')
    assert scheme == "bearer" and params["realm"] == "https://auth.example/token"
    assert params["service"] == "registry.example" and params["scope"] == "repository:a/b:pull"


def test_docker_config_credentials(tmp_path):
    import base64
    import json
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://r.example:5443": {"auth": base64.b64encode(b"u:p:w").decode()},
        "other.example": {"username": "x", "password": "y"}}}))
    assert oci.docker_config_credentials("r.example:5443", tmp_path / "config.json") == ("u", "p:w")
    assert oci.docker_config_credentials("other.example", tmp_path / "config.json") == ("x", "y")
    assert oci.docker_config_credentials("nope.example", tmp_path / "config.json") is None


# -- kubeprobe image publish -----------------------------------------------------------------
def run_publish(*args, stdin=""):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "kubeprobe.cli", "image", "publish", *args],
                          input=stdin, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, says", [
    (["--registry", "bad host"], "not a registry host"),
    (["--registry", "r.example:5000", "--repository", "Bad/Name"], "not a valid repository"),
    (["--registry", "r.example:5000", "--password-stdin"], "--password-stdin needs --username"),
    (["--registry", "r.example:5000", "--sign-key", "/nonexistent.key"], "--sign-key"),
    (["--repository", "a/b"], "--registry"),
])
def test_publish_bad_options_are_one_line_exit_2(args, says):
    done = run_publish(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stderr
    assert done.stdout == ""


def test_publish_pushes_the_probe_image_and_prints_its_digest(registries):
    from kubeprobe.agent import source_hash
    running = registries["htpasswd"]
    done = run_publish("--registry", running.host, "--ca-file", str(running.ca_file),
                       "--username", running.credentials[0], "--password-stdin",
                       stdin=running.credentials[1] + "\n")
    assert done.returncode == 0, done.stderr
    reference = done.stdout.strip()
    assert reference.startswith(f"{running.host}/kubeprobe/agent@sha256:")
    digest = reference.split("@")[1]
    client = running.client()
    assert client.manifest_digest("kubeprobe/agent", source_hash()) == digest
    config = json.loads(client.request("GET", f"/v2/kubeprobe/agent/blobs/"
                                       f"{client.get_manifest('kubeprobe/agent', digest).json()['config']['digest']}",
                                       scope="repository:kubeprobe/agent:pull").body)
    assert config["config"]["Entrypoint"] == ["/kubeprobe-agent"]


def test_publish_without_credentials_fails_in_one_line(registries, tmp_path, monkeypatch):
    running = registries["htpasswd"]
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))      # no config.json entry
    monkeypatch.delenv("KUBEPROBE_REGISTRY_PASSWORD", raising=False)
    done = run_publish("--registry", running.host, "--ca-file", str(running.ca_file))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[-1].startswith("kubeprobe: image publish failed:")
    assert "401" in lines[-1] and done.stdout == ""


def test_exempt_namespaces_from_options_are_kept_like_the_labs():
    """--registry-exempt-namespaces: the operator's word that the signature webhook leaves
    these alone by design, the same field the lab fills from its own state."""
    chain = supplychain.from_options(None, None, {"unsigned": "r.example/a:1"},
                                     ("cosign-system", "falco"))
    assert chain.exempt_namespaces == ("cosign-system", "falco") and chain.source == "options"
    assert supplychain.from_options(None, None, {}).exempt_namespaces == ()
