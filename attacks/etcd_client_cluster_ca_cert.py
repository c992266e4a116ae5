"""Read /registry keys from etcd with a client certificate signed by the *cluster* CA.

The guidance asks for a dedicated etcd CA: then any certificate the cluster signer hands out
(here obtained through an approved CSR for kubernetes.io/kube-apiserver-client) is refused.
The issued certificate must really be the cluster CA's: its signature is verified against the
cluster's own trust bundle (ConfigMap kube-root-ca.crt, the kubeconfig's CA). A cluster whose
kube-apiserver-client signer is a separate CA cannot answer the question: SKIP, with why.

SUCCEEDED: etcd answered: it trusts the cluster CA (or does not check client certificates).
BLOCKED:   TLS client-certificate alert after the server's CertificateRequest. A refused
           connection is INCONCLUSIVE (kubeprobe.refusals).
"""
from kubeprobe import pki
from kubeprobe.classify import etcd_range_attack
from kubeprobe.context import Unavailable

TARGETS = "etcd_client"


def run(ctx, target):
    cert = ctx.credentials.cluster_ca_client_cert(ctx)
    bundle, source = ctx.credentials.cluster_trust_bundle(ctx)
    signer = pki.issuing_ca(cert.cert_pem, bundle)
    if signer is None:
        raise Unavailable(
            f"the CSR's certificate (issuer {pki.describe(cert.cert_pem)['issuer']}) is not "
            f"signed by any CA in the cluster's trust bundle ({source}): the "
            "kube-apiserver-client signer is a separate CA here, so this certificate cannot "
            "show whether etcd trusts the cluster CA")
    ctx.note(f"the CSR's certificate is signed by {signer.subject.rfc4514_string()} from the "
             f"cluster's trust bundle ({source}): signature verified")
    return etcd_range_attack(ctx, target, "etcd range with a cluster-CA client certificate",
                             client_cert=cert)
