"""The cluster profiles kind and the lab build, in one place.

    hardened  every control holds (kind-config.yaml + fixtures/policies/)
    weak      every control open, the negative control (fixtures/kind-config-weak.yaml +
              fixtures/weak/)
    decoy     weak plus wrong-reason blockers (fixtures/kind-config-decoy.yaml +
              fixtures/weak/ + fixtures/decoy/; on the lab also kubeprobe/lab/decoy.py):
              no block-type control may PASS against it
"""
from __future__ import annotations

from pathlib import Path

from kubeprobe.resources import data

FIXTURES = data("fixtures")
KIND_CONFIGS = {"hardened": data("kind-config.yaml"),
                "weak": FIXTURES / "kind-config-weak.yaml",
                "decoy": FIXTURES / "kind-config-decoy.yaml"}
# Manifests applied once the cluster answers, in this order.
PROFILE_MANIFESTS = {"hardened": (FIXTURES / "policies",),
                     "weak": (FIXTURES / "weak",),
                     "decoy": (FIXTURES / "weak", FIXTURES / "decoy")}


def manifest_files(profile: str) -> list[Path]:
    return [f for directory in PROFILE_MANIFESTS.get(profile, ()) if directory.is_dir()
            for f in sorted(directory.glob("*.yaml"))]


# The lab's OCI registry (kubeprobe/lab/registry.py): htpasswd authentication on the
# hardened lab, the same registry anonymous on the weak one (and so on the decoy).
REGISTRY_AUTHENTICATED = {"hardened": True, "weak": False, "decoy": False}


def registry_authenticated(profile: str) -> bool:
    return REGISTRY_AUTHENTICATED.get(profile, False)


# Signature- and scan-gated admission (sigstore policy-controller, kubeprobe/lab/signing.py):
# the hardened lab only.
SIGNATURE_ADMISSION = {"hardened": True, "weak": False, "decoy": False}


def signature_admission(profile: str) -> bool:
    return SIGNATURE_ADMISSION.get(profile, False)
