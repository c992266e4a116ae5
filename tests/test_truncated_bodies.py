"""A 200 whose body is larger than the probes read is still a 200: judged on its status,
content type and the part that arrived, never ERROR; its secret values never reach the
evidence. Real HTTP and HTTPS servers on loopback (tests/tlsservers.py)."""
from __future__ import annotations

import json

import pytest

from kubeprobe.catalog import load_attack, load_catalog
from kubeprobe.net import BODY_LIMIT, json_object_prefix
from kubeprobe.outcome import Outcome, Verdict, judge
from tests import tlsservers
from tests.conftest import endpoint

CATALOG = load_catalog()
SECRET_VALUE = "c2VjcmV0LXZhbHVl"


@pytest.fixture(scope="module")
def certs():
    with tlsservers.pki_dir() as made:
        yield made


def serve_json(certs, tls: bool, body: bytes):
    context = tlsservers.server_context(certs, require_client_cert=False) if tls else None
    return tlsservers.serve(context, lambda method, path: (200, "application/json", body))


def test_anonymous_secrets_list_over_the_limit_is_succeeded(certs, make_ctx):
    body = tlsservers.big_secret_list()
    assert len(body) > 64 * 1024
    ctx = make_ctx(control_id="APISERVER-02")
    with serve_json(certs, True, body) as server:
        observation = load_attack("apiserver_anonymous_request").run(
            ctx, endpoint("apiserver", server.port), resource="secrets")
    assert observation.outcome is Outcome.SUCCEEDED, observation
    assert "at least" in observation.summary and f"over {BODY_LIMIT} bytes" in observation.summary
    assert observation.evidence["names_sample"][0] == "default/secret-0"
    control = CATALOG.get("APISERVER-02")
    assert judge(control.expectation("default"), control.blocked_by, observation,
                 control.weaker).verdict is Verdict.FAIL
    recorded = ctx.exchanges[0]["response"]
    assert recorded["body_truncated"] is True
    assert SECRET_VALUE not in json.dumps(ctx.exchanges), "a secret value reached the evidence"


BIG_POD_LIST = json.dumps({"kind": "PodList", "items": [
    {"metadata": {"name": f"pod-{i}", "namespace": "default"}, "spec": {"x": "y" * 500}}
    for i in range(300)]}).encode()


def test_kubelet_pod_list_over_the_limit_is_succeeded(certs, make_ctx):
    with serve_json(certs, True, BIG_POD_LIST) as server:
        observation = load_attack("kubelet_anonymous_request").run(
            make_ctx(control_id="KUBELET-01"), endpoint("node", server.port), path="/pods")
    assert observation.outcome is Outcome.SUCCEEDED
    assert "the kubelet listed at least" in observation.summary
    assert "default/pod-0" in observation.evidence["pods_sample"]


def test_read_only_port_pod_list_over_the_limit_is_succeeded(certs, make_ctx):
    """Plain HTTP, as the read-only port serves it."""
    with serve_json(certs, False, BIG_POD_LIST) as server:
        observation = load_attack("kubelet_read_only_port").run(
            make_ctx(control_id="KUBELET-04"), endpoint("node", 0), port=server.port)
    assert observation.outcome is Outcome.SUCCEEDED
    assert f"over {BODY_LIMIT} bytes" in observation.summary


def test_body_cut_before_any_whole_item_is_named_by_status_and_type(certs, make_ctx):
    one_huge_item = json.dumps({"kind": "SecretList", "items": [
        {"metadata": {"name": "huge"}, "data": {"blob": SECRET_VALUE * 10000}}]}).encode()
    ctx = make_ctx(control_id="APISERVER-02")
    with serve_json(certs, True, one_huge_item) as server:
        observation = load_attack("apiserver_anonymous_request").run(
            ctx, endpoint("apiserver", server.port), resource="secrets")
    assert observation.outcome is Outcome.SUCCEEDED, observation
    assert "at least 0 secrets listed" in observation.summary
    assert SECRET_VALUE not in json.dumps(ctx.exchanges)


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": 1, "items": [{"x": 1}, {"x": 2}, {"x"', {"a": 1, "items": [{"x": 1}, {"x": 2}]}),
    ('{"a": 1, "b": 12', {"a": 1}),                       # a number at the cut may be cut
    ('{"a": "complete", "b": "cu', {"a": "complete"}),
    ('{"items": [1, 2]', {"items": [1, 2]}),
    ('{"items": [1, 2', {"items": [1]}),
    ('[1, 2', None),
    ('', None),
])
def test_json_object_prefix(text, expected):
    assert json_object_prefix(text) == expected
