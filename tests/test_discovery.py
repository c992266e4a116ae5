"""Discovery decides which endpoints a control attacks, and whether a missing endpoint is a
SKIP (the component is absent) or an ERROR (it is there but cannot be addressed).

The cluster's answers come from `ListedCluster`, a stand-in for the API server's list
responses built from the official client's models; the lab runs discovery for real in every
suite run. The API server's serving-certificate check runs against real TLS servers.
"""
from __future__ import annotations

import socket
import ssl
import threading
from contextlib import contextmanager
from types import SimpleNamespace

from kubernetes import client

from kubeprobe import pki
from kubeprobe.authn import serves_apiserver_certificate
from kubeprobe.discovery import FRONT_END, discover

KUBE_TIMEOUT = (1.0, 2.0)


def etcd_pod(args: list[str], name="etcd-node1"):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, namespace="kube-system"),
        spec=client.V1PodSpec(node_name="node1", containers=[
            client.V1Container(name="etcd", command=["etcd", *args])]),
        status=client.V1PodStatus(host_ip="10.0.0.5"))


def apiserver_pod(address="10.0.0.5"):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="kube-apiserver-node1", namespace="kube-system"),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="kube-apiserver", command=["kube-apiserver", f"--advertise-address={address}",
                                            "--secure-port=6443"])]))


def node(name="node1", addresses=(("InternalIP", "10.0.0.5"),)):
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name),
        status=client.V1NodeStatus(
            addresses=[client.V1NodeAddress(type=t, address=a) for t, a in addresses],
            daemon_endpoints=client.V1NodeDaemonEndpoints(
                kubelet_endpoint=client.V1DaemonEndpoint(port=10250))))


class ListedCluster:
    """Stand-in for the API server's list answers (only the calls discovery makes)."""

    def __init__(self, nodes, pods, apiserver_addresses=("10.0.0.5",),
                 server=("10.0.0.5", 6443)):
        self.nodes, self.pods = nodes, pods
        self.slices = [client.V1EndpointSlice(
            address_type="IPv4", ports=[client.DiscoveryV1EndpointPort(port=6443)],
            endpoints=[client.V1Endpoint(addresses=list(apiserver_addresses))])]
        self.server_host_port = server
        self.timeout = KUBE_TIMEOUT
        self.core = SimpleNamespace(list_node=self._list_node,
                                    list_namespaced_pod=self._list_pods)
        self.discovery = SimpleNamespace(list_namespaced_endpoint_slice=self._list_slices)

    def _list_node(self, label_selector=None, **_):
        assert label_selector == "!kubeprobe.io/run-id"  # never a run's throwaway Node
        return SimpleNamespace(items=self.nodes)

    def _list_pods(self, namespace, label_selector, **_):
        component = label_selector.split("=", 1)[1]
        return SimpleNamespace(items=[p for p in self.pods
                                      if p.metadata.name.startswith(component)])

    def _list_slices(self, namespace, label_selector, **_):
        return SimpleNamespace(items=self.slices)


def test_etcd_on_loopback_only_is_an_error_not_a_skip():
    found = discover(ListedCluster([node()], [etcd_pod([
        "--advertise-client-urls=https://127.0.0.1:2379",
        "--listen-client-urls=https://127.0.0.1:2379",
        "--initial-advertise-peer-urls=https://127.0.0.1:2380"]), apiserver_pod()]))
    assert found.of("etcd_client") == []
    assert "loopback only" in found.unreachable["etcd_client"]
    assert "etcd_client" not in found.missing


def test_etcd_configured_through_a_config_file_is_an_error_naming_it():
    found = discover(ListedCluster([node()], [
        etcd_pod(["--config-file=/etc/etcd/etcd.conf.yml"]), apiserver_pod()]))
    assert "--config-file /etc/etcd/etcd.conf.yml" in found.unreachable["etcd_client"]


def test_no_etcd_pod_is_a_skip():
    found = discover(ListedCluster([node()], [apiserver_pod()]))
    assert "managed or external etcd" in found.missing["etcd_client"]
    assert "etcd_client" not in found.unreachable


def test_nodes_without_any_address_are_an_error():
    found = discover(ListedCluster([node(addresses=())], [apiserver_pod()]))
    assert found.of("node") == [] and "report no InternalIP" in found.unreachable["node"]


def test_external_ip_is_used_when_there_is_no_internal_ip():
    found = discover(ListedCluster([node(addresses=(("ExternalIP", "198.51.100.7"),))],
                                   [apiserver_pod()]))
    assert [e.host for e in found.of("node")] == ["198.51.100.7"]


def test_kubeconfig_url_that_is_not_the_apiserver_is_a_front_end_and_own_endpoints_join():
    found = discover(ListedCluster([node()], [apiserver_pod()],
                                   apiserver_addresses=("10.0.0.5", "10.0.0.6"),
                                   server=("203.0.113.9", 443)))
    network = {(e.host, e.port): e.name for e in found.of("apiserver_network")}
    assert network == {("203.0.113.9", 443): FRONT_END, ("10.0.0.5", 6443): "apiserver",
                       ("10.0.0.6", 6443): "apiserver"}
    assert [(e.host, e.port) for e in found.of("apiserver")] == [("203.0.113.9", 443)]


def test_kubeconfig_url_that_is_an_own_endpoint_is_attacked_once():
    found = discover(ListedCluster([node()], [apiserver_pod()]))
    assert [(e.host, e.name) for e in found.of("apiserver_network")] == [("10.0.0.5",
                                                                          "apiserver")]


@contextmanager
def tls_server(issued):
    context = issued.server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_apiserver_serving_certificate_tells_the_apiserver_from_a_front_end():
    cluster_ca = pki.CertificateAuthority.create("kubernetes")
    kube = SimpleNamespace(cluster_ca_pem=cluster_ca.cert_pem)
    apiserver = cluster_ca.issue("kube-apiserver", client=False, server=True,
                                 hosts=("kubernetes", "kubernetes.default.svc", "127.0.0.1"))
    with tls_server(apiserver) as port:
        is_apiserver, detail = serves_apiserver_certificate(kube, "127.0.0.1", port)
    assert is_apiserver, detail
    # An authenticating proxy's own certificate, even with the right names, is not the
    # cluster CA's; one from the cluster CA without the service name is not a serving cert.
    proxy_ca = pki.CertificateAuthority.create("corp proxy CA")
    for issued in (proxy_ca.issue("proxy", client=False, server=True,
                                  hosts=("kubernetes.default.svc",)),
                   cluster_ca.issue("something-else", client=False, server=True,
                                    hosts=("127.0.0.1",))):
        with tls_server(issued) as port:
            is_apiserver, detail = serves_apiserver_certificate(kube, "127.0.0.1", port)
        assert not is_apiserver, detail
