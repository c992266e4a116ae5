// CoreDNS for kubeprobe's offline kind node image: CoreDNS v1.14.6's own server (coremain)
// with the plugins kubeadm's Corefile uses (cmd/kubeadm/app/phases/addons/dns/manifests.go:
// errors, health, ready, kubernetes, prometheus, forward, cache, loop, reload, loadbalance)
// and bind and log. This is CoreDNS's documented way to choose plugins at build time (a main that
// imports them, instead of core/plugin, which imports all 60-odd); it leaves out the cloud
// DNS backends (route53, azure, clouddns), tracing and the rest no kind cluster asks for.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
