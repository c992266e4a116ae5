"""Every control of the catalog, attacked for real against the target.

One test per control (parametrized from kubeprobe/catalog.yaml). The verdict is PASS only with
positive proof that the control blocked the attack (or that the detector alerted on it).
"""
from kubeprobe.plugin import enforce


def test_control(kubeprobe_control, kubeprobe_suite, request):
    enforce(kubeprobe_suite, kubeprobe_control, request.node)
