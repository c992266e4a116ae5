"""What the registry and signed-image controls attack: the private registry and its images.

The lab knows its own (kubeprobe/lab/registry.py, signing.py: the state records the registry,
its CA, the credentials file and the sample images). An existing cluster is described by
options; a control whose image is not named SKIPs with the reason:

    --registry-image REF        an image in the private registry (REGISTRY-01 asks for its
                                manifest without credentials); --registry-ca FILE for its TLS
    --signed-image REF          an image the signature and scan policies admit: every
                                positive twin of REGISTRY-02..05
    --unsigned-image REF        the same registry, no signature by the organisation's key
    --foreign-signed-image REF  signed, but with a key the policy does not trust
    --unscanned-image REF       signed, no vulnerability-scan attestation
    --scan-rejected-image REF   an image the cluster's own scanner must reject (a critical
                                finding in its attestation)

Registry credentials for a twin (the same manifest request, authenticated, must answer 200)
come from the lab, or from a docker config.json ($DOCKER_CONFIG) entry for the registry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kubeprobe import oci

# host[:port]/path[:tag][@sha256:hex] with an explicit registry host (a dot, a port or
# localhost in the first component): these controls are about one named registry.
IMAGE_REF = re.compile(r"^(?P<host>(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(?::\d{1,5})?)/"
                       r"(?P<repository>[a-z0-9]+(?:[._/-]+[a-z0-9]+)*)"
                       r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?"
                       r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$")
# image kind -> (option, what it is)
IMAGE_OPTIONS = {
    "signed": ("--signed-image", "an image signed by the organisation's key with a clean "
                                 "scan attestation"),
    "unsigned": ("--unsigned-image", "an image with no signature by the organisation's key"),
    "foreign": ("--foreign-signed-image", "an image signed with a foreign key"),
    "unscanned": ("--unscanned-image", "a signed image with no vulnerability-scan attestation"),
    "critical": ("--scan-rejected-image", "an image the cluster's scanner must reject (a "
                                          "critical finding in its attestation)"),
}
LAB_SAMPLE = {"signed": "trusted", "unsigned": "unsigned", "foreign": "foreign",
              "unscanned": "unscanned", "critical": "critical"}


class Unconfigured(LookupError):
    """The control's image or registry is not named: SKIP with this reason."""


@dataclass(frozen=True)
class ImageRef:
    host: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return (f"{self.host}/{self.repository}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def parse_image(ref: str) -> ImageRef:
    found = IMAGE_REF.match(ref or "")
    first = (ref or "").split("/", 1)[0]
    if not found or not ("." in first or ":" in first or first == "localhost"):
        raise ValueError(f"not an image reference with a registry host: {ref!r} (e.g. "
                         "registry.example:5443/team/app@sha256:...)")
    return ImageRef(found["host"], found["repository"], found["tag"], found["digest"])


@dataclass(frozen=True)
class SupplyChain:
    """The registry and images the supply-chain controls use; `source` says who named them."""
    source: str                                   # "lab" or "options"
    registry_image: str | None = None
    registry_ca: str | None = None
    registry_address: str | None = None           # connect here instead (the lab: node IP)
    credentials: tuple[str, str] | None = None    # for the authenticated twin
    images: dict[str, str] = field(default_factory=dict)   # kind -> ref (IMAGE_OPTIONS)
    facts: dict = field(default_factory=dict)     # what the lab knows (keys, webhook), evidence
    # Namespaces the signature webhook leaves alone by design (the lab: its own namespace),
    # not swept by REGISTRY-02..05; said in their evidence.
    exempt_namespaces: tuple[str, ...] = ()

    def registry(self, anonymous: bool) -> tuple[oci.Registry, ImageRef]:
        if not self.registry_image:
            raise Unconfigured("no private registry image named (pass --registry-image REF, "
                               "and --registry-ca FILE if its CA is not in the system trust)")
        ref = parse_image(self.registry_image)
        creds = None if anonymous else self.credentials
        if creds is None and not anonymous:
            creds = oci.docker_config_credentials(ref.host)
        client = oci.Registry(ref.host, address=self.registry_address,
                              ca_file=self.registry_ca,
                              username=creds[0] if creds else None,
                              password=creds[1] if creds else None)
        return client, ref

    def has_credentials(self) -> bool:
        if self.credentials:
            return True
        return bool(self.registry_image and oci.docker_config_credentials(
            parse_image(self.registry_image).host))

    def image(self, kind: str) -> str:
        if kind not in IMAGE_OPTIONS:
            raise KeyError(f"unknown supply-chain image kind {kind!r}")
        if self.images.get(kind):
            return self.images[kind]
        option, what = IMAGE_OPTIONS[kind]
        raise Unconfigured(f"{what} is not named (pass {option} REF)")

    def describe(self) -> dict:
        return {"named by": "the lab" if self.source == "lab" else "kubeprobe options",
                "registry image": self.registry_image, "images": dict(self.images),
                **self.facts}


def from_lab(registry_state: dict | None) -> SupplyChain | None:
    """The lab's registry (the lab state's `registry`), None when the lab has none."""
    if not registry_state or not registry_state.get("images"):
        return None
    from kubeprobe.lab.registry import RegistryInfo
    info = RegistryInfo.from_json(registry_state)
    samples = info.images or {}
    images = {kind: samples[name] for kind, name in LAB_SAMPLE.items() if name in samples}
    facts = {"registry": info.host, "authentication": "htpasswd" if info.authenticated
             else "none (anonymous)",
             "signature admission": info.signature_admission or "none"}
    exempt = tuple((info.signature_admission or {}).get("exempt_namespaces", ()))
    return SupplyChain("lab", registry_image=samples.get("trusted"), registry_ca=info.ca_file,
                       registry_address=info.address, credentials=info.credentials(),
                       images=images, facts=facts, exempt_namespaces=exempt)


def from_options(registry_image: str | None, registry_ca: Path | None,
                 images: dict[str, str | None],
                 exempt_namespaces: tuple[str, ...] = ()) -> SupplyChain:
    """Options on the command line (already validated by `check_options`);
    --registry-exempt-namespaces as the lab's exemptions."""
    return SupplyChain("options", registry_image=registry_image,
                       registry_ca=str(registry_ca) if registry_ca else None,
                       images={k: v for k, v in images.items() if v},
                       exempt_namespaces=tuple(exempt_namespaces))


def check_options(registry_image: str | None, registry_ca: Path | None,
                  images: dict[str, str | None]) -> str | None:
    """One line naming the first bad option, or None."""
    for option, value in (("--registry-image", registry_image),
                          *((IMAGE_OPTIONS[k][0], v) for k, v in images.items())):
        if value is None:
            continue
        try:
            parse_image(value)
        except ValueError as exc:
            return f"{option}: {exc}"
    if registry_ca is not None and not Path(registry_ca).is_file():
        return f"--registry-ca {registry_ca} is not a readable file"
    return None


def add_registry_endpoint(found, supply_chain: SupplyChain | None):
    """The private registry as the `registry` endpoint of discovery (kubeprobe.discovery), or
    why there is none (its controls SKIP)."""
    from kubeprobe.discovery import Endpoint
    if supply_chain is None or not supply_chain.registry_image:
        found.missing["registry"] = ("no private registry named (pass --registry-image REF on "
                                     "an existing cluster; the lab names its own)")
        return found
    ref = parse_image(supply_chain.registry_image)
    host_, _, port = ref.host.partition(":")
    source = ("the lab's registry" if supply_chain.source == "lab" else "--registry-image")
    found.add(Endpoint("registry", ref.host, host_, int(port or 443), source))
    return found
