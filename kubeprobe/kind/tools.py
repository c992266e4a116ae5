"""The kind path's programs, built from their Go modules and cached like the lab's builds.

    kind        sigs.k8s.io/kind                      the kind CLI
    helm        helm.sh/helm/v3                       the documented Falco path
    moby        github.com/moby/moby/v2               dockerd + docker-proxy (our engine, only
                                                      started when no engine answers)
    runc        github.com/opencontainers/runc        cgo + libseccomp (-tags seccomp); for our
                                                      dockerd and inside the node image
    containerd  github.com/containerd/containerd/v2   containerd, ctr, shim (node image)
    crictl      sigs.k8s.io/cri-tools                 crictl (node image)
    local-path  github.com/rancher/local-path-provisioner   the node image's storage
    coredns     kubeprobe/kind/coredns: github.com/coredns/coredns v1.14.6's server with the
                plugins kubeadm's Corefile uses; the node image's DNS addon
    kindnetd    kubeprobe/kind/kindnetd: kind's nested module images/kindnetd at kind@2411fe07,
                vendored (the Go module proxy does not serve sigs.k8s.io/kind/images/kindnetd).
                Not the 69b56db7 source kind v0.33.0's image tag names: its next change
                (e35179f0) needs sigs.k8s.io/kube-network-policies
                v1.0.1-0.20260528073847-f67f0fb35e2b, which the proxy refuses (403); 2411fe07
                is the last kindnetd on kube-network-policies v0.8.0, which it serves.

The builder, its cache and stamps are kubeprobe/gotools.py's, shared with the lab's tools and
the self-tests'.
"""
from __future__ import annotations

from pathlib import Path

from kubeprobe.gotools import GoTool, ToolUnavailable, ensure, go_env, stamp  # noqa: F401

HERE = Path(__file__).resolve().parent


KIND = GoTool("kind", "sigs.k8s.io/kind", "v0.33.0", ("sigs.k8s.io/kind",))
HELM = GoTool("helm", "helm.sh/helm/v3", "v3.22.0", ("helm.sh/helm/v3/cmd/helm",))
MOBY = GoTool("moby", "github.com/moby/moby/v2", "v2.0.0-beta.24",
              ("github.com/moby/moby/v2/cmd/dockerd", "github.com/moby/moby/v2/cmd/docker-proxy"))
RUNC = GoTool("runc", "github.com/opencontainers/runc", "v1.5.3", (".",), cgo=True,
              tags="seccomp", how="moddir", outputs={".": "runc"},
              ldflags="-s -w -X main.version=1.5.3")
CONTAINERD = GoTool("containerd", "github.com/containerd/containerd/v2", "v2.3.4",
                    ("github.com/containerd/containerd/v2/cmd/containerd",
                     "github.com/containerd/containerd/v2/cmd/ctr",
                     "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"),
                    tags="no_btrfs no_devmapper no_zfs",
                    ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=v2.3.4")
CRICTL = GoTool("crictl", "sigs.k8s.io/cri-tools", "v1.37.0",
                ("sigs.k8s.io/cri-tools/cmd/crictl",),
                ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v1.37.0")
LOCAL_PATH = GoTool("local-path-provisioner", "github.com/rancher/local-path-provisioner",
                    "v0.0.30", ("github.com/rancher/local-path-provisioner",))
KINDNETD = GoTool("kindnetd", "sigs.k8s.io/kind/images/kindnetd", "2411fe07",
                  ("./cmd/kindnetd",), how="local", source=HERE / "kindnetd")


# One CoreDNS build serves every Kubernetes version the lab supports: the node image tags it as
# the coredns image that version's kubeadm lists (the binary reads kubeadm's Corefile either way).
# Built from kubeprobe/kind/coredns: CoreDNS's own server with the plugins kubeadm's Corefile
# uses (CoreDNS's documented build-time plugin choice), not its 60-odd: a third of the build.
COREDNS = GoTool("coredns", "github.com/coredns/coredns", "v1.14.6+kubeadm-plugins", (".",),
                 how="local", source=HERE / "coredns", outputs={".": "coredns"})


ENGINE_TOOLS = (MOBY, RUNC)
CLI_TOOLS = (KIND, HELM)
NODE_TOOLS = (CONTAINERD, RUNC, CRICTL, KINDNETD, LOCAL_PATH, COREDNS)
