"""The kubeprobe lab: a real single-node Kubernetes built from upstream sources, on any
supported minor (kubeprobe.lab.build.SUPPORTED: 1.35, 1.36, 1.37; the newest by default).

    from kubeprobe import lab
    state = lab.up("hardened")      # or "weak", "decoy"; version="1.36"; returns a LabState
    ...                             # state.kubeconfig, state.node_ip, ...
    lab.down()
"""
from kubeprobe.lab.cluster import LabError, LabState, down, status, up

__all__ = ["LabError", "LabState", "down", "status", "up"]
