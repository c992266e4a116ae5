"""Registry and token-automount inventories over Kubernetes API objects."""
from kubernetes.client import (V1Container, V1LocalObjectReference, V1ObjectMeta, V1Pod,
                               V1PodSpec, V1ServiceAccount)

from kubeprobe.inventory import registry_inventory, registry_of, token_automount_inventory


def pod(ns, name, images, pull=None, sa="default", automount=None, init=()):
    return V1Pod(metadata=V1ObjectMeta(namespace=ns, name=name), spec=V1PodSpec(
        containers=[V1Container(name=f"c{i}", image=img) for i, img in enumerate(images)],
        init_containers=[V1Container(name="init", image=i) for i in init] or None,
        image_pull_secrets=[V1LocalObjectReference(name=p) for p in pull or []] or None,
        service_account_name=sa, automount_service_account_token=automount))


def sa(ns, name, pull=(), automount=None):
    return V1ServiceAccount(metadata=V1ObjectMeta(namespace=ns, name=name),
                            image_pull_secrets=[V1LocalObjectReference(name=p) for p in pull]
                            or None, automount_service_account_token=automount)


def test_registry_of_follows_runtime_resolution():
    assert registry_of("nginx:1.27") == "docker.io"
    assert registry_of("library/nginx") == "docker.io"
    assert registry_of("registry.k8s.io/pause:3.10.1") == "registry.k8s.io"
    assert registry_of("localhost:5000/app") == "localhost:5000"


def test_registry_inventory_names_credentials_from_pod_or_serviceaccount():
    pods = [pod("shop", "web", ["ghcr.io/acme/web@sha256:" + "a" * 64], pull=["ghcr-creds"]),
            pod("shop", "job", ["nginx"], sa="builder", init=["quay.io/x/init:1"]),
            pod("kube-system", "etcd", ["registry.k8s.io/etcd:3.6.5-0"])]
    found = registry_inventory(pods, [sa("shop", "builder", pull=["quay-creds"])])
    assert found["shop"]["ghcr.io"] == {"pods": 1, "pull_secrets": ["ghcr-creds"],
                                        "credentials": True}
    assert found["shop"]["quay.io"]["pull_secrets"] == ["quay-creds"]
    assert found["shop"]["docker.io"]["credentials"] is True  # the SA's secret applies
    assert found["kube-system"]["registry.k8s.io"]["credentials"] is False


def test_token_automount_pod_setting_wins_and_system_namespaces_are_skipped():
    pods = [pod("shop", "a", ["x"]), pod("shop", "b", ["x"], automount=False),
            pod("shop", "c", ["x"], sa="quiet"), pod("shop", "d", ["x"], sa="quiet",
                                                     automount=True),
            pod("kube-system", "e", ["x"])]
    found = token_automount_inventory(pods, [sa("shop", "quiet", automount=False)])
    assert found == {"workload_pods_with_token": 2, "sample": ["shop/a", "shop/d"]}
