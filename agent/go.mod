module kubeprobe/agent

go 1.24
