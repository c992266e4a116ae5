"""Read /registry keys from etcd with a client certificate signed by the *cluster* CA.

The guidance asks for a dedicated etcd CA: then any certificate the cluster signer hands out
(here obtained through an approved CSR for kubernetes.io/kube-apiserver-client) is refused.

SUCCEEDED: etcd answered: it trusts the cluster CA (or does not check client certificates).
BLOCKED:   TLS client-certificate alert after the server's CertificateRequest. A refused
           connection is INCONCLUSIVE (kubeprobe.refusals).
"""
from kubeprobe.classify import etcd_range_attack

TARGETS = "etcd_client"


def run(ctx, target):
    return etcd_range_attack(ctx, target, "etcd range with a cluster-CA client certificate",
                             client_cert=ctx.credentials.cluster_ca_client_cert(ctx))
