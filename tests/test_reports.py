"""The reports a run leaves: results.json, report.html (kubeprobe's auditor report, rendered
from the very document written to results.json), junit.xml. Runs attack
tests/standin_apiserver.py (a TLS stand-in that answers like an API server and can stop
answering at a chosen request); nothing here touches the lab."""
from __future__ import annotations

from kubeprobe.kube import Kube
from kubeprobe.provenance import sha256_of
from tests.test_bad_input import StandInApiServer, load_catalog, standin_suite, \
    throwaway_catalog


def test_environment_names_the_cluster_and_the_runner(tmp_path):
    """kube-system's UID names the cluster; SelfSubjectReview names the runner as the API
    server authenticated it (the official client, the runner's own credentials)."""
    catalog = load_catalog(throwaway_catalog(tmp_path, "succeeds"))
    with StandInApiServer() as api:
        environment = standin_suite(api, catalog, tmp_path).environment
    assert environment["kube-system UID"] == "5tand1n0-0000-4000-8000-000000000001"
    assert environment["Runner"] == ("standin-runner (groups: standin:admins, "
                                     "system:authenticated)")
    assert environment["Catalog (sha256)"] == sha256_of(catalog.path)
    digest = environment["Falco rules (sha256)"].split()[-1]
    assert len(digest) == 64  # the whole digest, not a prefix


def test_identity_that_cannot_be_read_says_why(tmp_path):
    with StandInApiServer() as api:
        kube = Kube.connect(api.kubeconfig(tmp_path), None)
        api.answer = lambda method, path: (403, {"kind": "Status", "code": 403,
                                                 "reason": "Forbidden", "message": "no"})
        assert kube.runner_identity() == ("unknown (SelfSubjectReview: ForbiddenException: "
                                          "HTTP 403 Forbidden)")
        assert kube.namespace_uid("kube-system") == ("unknown (ForbiddenException: HTTP 403 "
                                                         "Forbidden)")
