"""The kubeprobe lab: a real single-node Kubernetes v1.34 built from upstream sources.

    from kubeprobe import lab
    state = lab.up("hardened")      # or "weak"; returns a LabState
    ...                             # state.kubeconfig, state.node_ip, ...
    lab.down()
"""
from kubeprobe.lab.cluster import LabError, LabState, down, status, up

__all__ = ["LabError", "LabState", "down", "status", "up"]
