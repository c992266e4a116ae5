"""The identities an attacker holds: a certificate from a CA nobody trusts, a client certificate
signed by the cluster CA (through a CSR), and a ServiceAccount token without any rights."""
from __future__ import annotations

import json
import os
import threading
from functools import cached_property

from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeprobe import pki
from kubeprobe.context import AttackContext, Unavailable
from kubeprobe.journal import ObjectRef
from kubeprobe.kube import Kube
from kubeprobe.waiting import wait_for
from kubeprobe.net import ClientCert

KUBE_APISERVER_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
# Self-tests only (tests/test_canaries.py): a file where every secret the suite mints (tokens,
# private keys) is also appended, so the test can prove none of them reaches a report.
SELFTEST_SECRETS_ENV = "KUBEPROBE_SELFTEST_SECRETS_FILE"
_record_lock = threading.Lock()


def _record_for_selftest(kind: str, value: str) -> None:
    path = os.environ.get(SELFTEST_SECRETS_ENV)
    if path:
        with _record_lock, open(path, "a") as handle:
            handle.write(json.dumps({"kind": kind, "value": value}) + "\n")
# Published by kube-controller-manager in every namespace: the cluster's root CA bundle.
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"


class ClusterCredentials:
    """Credentials obtained from a live cluster (and a locally made foreign CA)."""

    def __init__(self, kube: Kube | None, csr_deadline_s: float = 30.0) -> None:
        self.kube = kube
        self.csr_deadline_s = csr_deadline_s

    @cached_property
    def _foreign(self) -> ClientCert:
        ca = pki.CertificateAuthority.create("kubeprobe foreign CA (never trusted)")
        # Claims cluster-admin: if anything trusts this CA, it trusts an attacker as admin.
        return ca.issue("kubeprobe-attacker", "system:masters").client_cert(
            "client certificate from a foreign CA (CN=kubeprobe-attacker, O=system:masters)")

    def foreign_ca_client_cert(self) -> ClientCert:
        return self._foreign

    def cluster_ca_client_cert(self, ctx: AttackContext) -> ClientCert:
        """A client certificate signed by the cluster's kube-apiserver-client signer (the
        cluster CA on kubeadm clusters), obtained through an approved CSR."""
        if self.kube is None:
            raise Unavailable("no Kubernetes API to request a cluster-CA certificate from")
        name = ctx.unique_name("csr")
        key = pki.new_key()
        request = pki.csr_pem(key, f"kubeprobe-{ctx.run_id}")
        api = self.kube.certificates
        body = client.V1CertificateSigningRequest(
            metadata=client.V1ObjectMeta(name=name, labels=ctx.labels),
            spec=client.V1CertificateSigningRequestSpec(
                request=pki.b64_pem(request), signer_name=KUBE_APISERVER_CLIENT_SIGNER,
                expiration_seconds=600, usages=["client auth", "digital signature"]))
        ctx.defer_undo(ObjectRef("certificates.k8s.io/v1", "CertificateSigningRequest", None,
                                 name))
        try:
            csr = api.create_certificate_signing_request(body, _request_timeout=self.kube.timeout)
            csr.status = client.V1CertificateSigningRequestStatus(conditions=[
                client.V1CertificateSigningRequestCondition(
                    type="Approved", status="True", reason="KubeprobeAttack",
                    message="kubeprobe: cluster-CA client certificate for an etcd probe")])
            api.replace_certificate_signing_request_approval(name, csr,
                                                             _request_timeout=self.kube.timeout)
        except ApiException as exc:
            raise Unavailable(f"cannot obtain a cluster-CA certificate through a CSR: HTTP "
                              f"{exc.status} {exc.reason}") from None

        def issued() -> bytes | None:
            status = api.read_certificate_signing_request(
                name, _request_timeout=self.kube.timeout).status
            return pki.b64_decode(status.certificate) if status and status.certificate else None
        try:
            cert_pem = wait_for(issued, self.csr_deadline_s, f"CSR {name} to be signed")
        except TimeoutError as exc:
            raise Unavailable(f"{exc} (is the controller-manager's signer running?)") from None
        info = pki.describe(cert_pem)
        ctx.note(f"cluster-CA client certificate via CSR {name}: subject {info['subject']}, "
                 f"issuer {info['issuer']}")
        _record_for_selftest("client key (cluster CA)", pki.key_pem(key).decode())
        return ClientCert(cert_pem, pki.key_pem(key),
                          f"client certificate signed by the cluster signer ({info['issuer']})")

    def cluster_trust_bundle(self, ctx: AttackContext) -> tuple[bytes, str]:
        """The cluster's CA certificates: ConfigMap kube-root-ca.crt (kube-system) and the
        kubeconfig's certificate-authority, whichever can be read."""
        if self.kube is None:
            raise Unavailable("no Kubernetes API to read the cluster's trust bundle from")
        parts, sources, failures = [], [], []
        try:
            config_map = self.kube.core.read_namespaced_config_map(
                ROOT_CA_CONFIGMAP, "kube-system", _request_timeout=self.kube.timeout)
            if (config_map.data or {}).get("ca.crt"):
                parts.append(config_map.data["ca.crt"].encode())
                sources.append(f"ConfigMap kube-system/{ROOT_CA_CONFIGMAP}")
        except ApiException as exc:
            failures.append(f"ConfigMap kube-system/{ROOT_CA_CONFIGMAP}: HTTP {exc.status}")
        kubeconfig_ca = self.kube.cluster_ca_pem
        if kubeconfig_ca:
            parts.append(kubeconfig_ca)
            sources.append("the kubeconfig's certificate-authority")
        if not parts:
            raise Unavailable("cannot read the cluster's trust bundle ("
                              f"{'; '.join(failures) or 'no ConfigMap, no kubeconfig CA'})")
        return b"\n".join(parts), " and ".join(sources)

    def service_account_token(self, ctx: AttackContext) -> str:
        """A short-lived token of a fresh ServiceAccount that has no RBAC bindings at all."""
        if self.kube is None:
            raise Unavailable("no Kubernetes API to create a ServiceAccount in")
        namespace = ctx.namespace()
        name = ctx.unique_name("sa")
        ctx.defer_undo(ObjectRef("v1", "ServiceAccount", namespace, name))
        self.kube.core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(
                name=name, labels=ctx.labels)), _request_timeout=self.kube.timeout)
        token = self.kube.core.create_namespaced_service_account_token(
            name, namespace, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)),
            _request_timeout=self.kube.timeout)
        ctx.note(f"identity: ServiceAccount {namespace}/{name} (no role bindings)")
        ctx.service_account_username = f"system:serviceaccount:{namespace}:{name}"
        _record_for_selftest("ServiceAccount token", token.status.token)
        return token.status.token

