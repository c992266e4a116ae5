"""Read /registry keys from the etcd client port without any client certificate.

SUCCEEDED: etcd answered the v3 range request (TLS without client-cert auth, or plain HTTP):
           the key names are the proof.
BLOCKED:   a client-certificate alert after the server's CertificateRequest. A refused
           connection is INCONCLUSIVE (kubeprobe.refusals).
"""
from kubeprobe.classify import etcd_range_attack

TARGETS = "etcd_client"


def run(ctx, target):
    return etcd_range_attack(ctx, target, "etcd range without a client certificate")
