module kubeprobe.local/lab/pause

go 1.24.0
