"""The decoy lab's network decoys: refusals for the wrong reason, on the lab node.

    REJECT (TCP reset) on the node's etcd client port 2379 and kubelet read-only port 10255
        for connections from this host to the node address (the API server reaches etcd on
        127.0.0.1 and is not affected): a refused connection that is not authentication, on
        a component that is up.
    a TLS server that refuses every handshake with handshake_failure before any
        CertificateRequest (as a cipher, curve or SNI mismatch does), put in front of the
        node's etcd peer port 2380 by DNAT: a TLS alert that is not a client-certificate
        refusal.

Rules live in chains named KUBE-KUBEPROBE-DECOY, so `lab down` removes them with the rest.
    python -m kubeprobe.lab.decoy serve-tls PORT   (the refusing TLS server; run by the lab)
"""
from __future__ import annotations

import socket
import ssl
import sys
import threading
from pathlib import Path

from kubeprobe import pki
from kubeprobe.lab import host

CHAIN = "KUBE-KUBEPROBE-DECOY"
REJECTED_PORTS = (2379, 10255)
TLS_DECOY_PORT = 2390
DNAT_PORT = 2380


def install(node_ip: str, log_dir: Path) -> dict[str, dict]:
    """Start the refusing TLS server and add the rules; returns the processes started."""
    exe = sys.executable
    pid = host.start_process([exe, "-m", "kubeprobe.lab.decoy", "serve-tls", str(TLS_DECOY_PORT)],
                             log_dir / "decoy-tls.log")
    rules = [("filter", "OUTPUT", [f"-d {node_ip}/32 -p tcp --dport {port} -j REJECT "
                                   "--reject-with tcp-reset" for port in REJECTED_PORTS]),
             ("nat", "OUTPUT", [f"-d {node_ip}/32 -p tcp --dport {DNAT_PORT} -j DNAT "
                                f"--to-destination 127.0.0.1:{TLS_DECOY_PORT}"])]
    for table, parent, chain_rules in rules:
        host.run(["iptables", "-w", "-t", table, "-N", CHAIN])
        for rule in chain_rules:
            host.run(["iptables", "-w", "-t", table, "-A", CHAIN, *rule.split()])
        host.run(["iptables", "-w", "-t", table, "-I", parent, "1", "-j", CHAIN])
    host.wait_for(lambda: _listening(TLS_DECOY_PORT), 10, "the decoy TLS server",
                  interval_s=0.1)
    return {"decoy-tls": {"pid": pid, "exe": exe}}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def serve_tls(port: int) -> None:
    """Refuse every TLS handshake with handshake_failure, never asking for a certificate."""
    ca = pki.CertificateAuthority.create("kubeprobe decoy CA")
    context = ca.issue("decoy", client=False, server=True, hosts=("127.0.0.1",)).server_context()
    # Called for every ClientHello (server_name None without SNI): the handshake ends here.
    context.sni_callback = lambda sock, server_name, ctx: ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
    listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_refuse, args=(context, conn), daemon=True).start()


def _refuse(context: ssl.SSLContext, conn: socket.socket) -> None:
    conn.settimeout(5)
    try:
        context.wrap_socket(conn, server_side=True).close()
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-tls":
        serve_tls(int(sys.argv[2]))
    else:
        sys.exit(__doc__)
