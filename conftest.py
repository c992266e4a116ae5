"""kubeprobe: the suite's pytest plugin lives in kubeprobe/plugin.py."""
pytest_plugins = ["kubeprobe.plugin"]
