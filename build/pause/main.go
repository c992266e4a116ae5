// pause is the lab's pod sandbox process: it holds the pod's namespaces, reaps orphaned
// children (it is PID 1 of the pod when the PID namespace is shared) and exits on
// SIGINT/SIGTERM, like registry.k8s.io/pause. Built with CGO_ENABLED=0: a static binary.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
