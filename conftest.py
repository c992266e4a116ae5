"""kubeprobe: the suite's pytest plugin lives in kubeprobe/plugin.py.

An installed kubeprobe registers it through its `pytest11` entry point, named `kubeprobe`
(so `-p kubeprobe` and `-p no:kubeprobe` work). A checkout without that entry point (or with
plugin autoloading off) registers it here instead: once, under the same name.
"""


def pytest_addhooks(pluginmanager) -> None:
    # A historic hook: called as this conftest is registered, after the entry points loaded.
    if pluginmanager.is_blocked("kubeprobe"):
        return
    import kubeprobe.plugin
    if not pluginmanager.is_registered(kubeprobe.plugin):
        name = "kubeprobe" if pluginmanager.get_plugin("kubeprobe") is None else "kubeprobe.plugin"
        pluginmanager.register(kubeprobe.plugin, name)
