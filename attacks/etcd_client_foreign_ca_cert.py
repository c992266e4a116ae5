"""Read /registry keys from etcd with a client certificate from a CA the cluster never saw.

SUCCEEDED: etcd answered: it does not verify client certificates against its own CA.
BLOCKED:   TLS client-certificate alert (bad_certificate / unknown_ca) after the server's
           CertificateRequest. A refused connection is INCONCLUSIVE (kubeprobe.refusals).
"""
from kubeprobe.classify import etcd_range_attack

TARGETS = "etcd_client"


def run(ctx, target):
    return etcd_range_attack(ctx, target, "etcd range with a foreign-CA client certificate",
                             client_cert=ctx.credentials.foreign_ca_client_cert())
