"""Pull an image's manifest from the private registry without credentials.

`GET /v2/<repository>/manifests/<digest>` with no Authorization header, as an anonymous
`docker pull` starts. The image is one the registry holds (the lab's signed sample, or
--registry-image on an existing cluster).

SUCCEEDED:    HTTP 200 with the manifest: anyone who reaches the registry can pull.
BLOCKED:      HTTP 401 with a `WWW-Authenticate` challenge, the same request with made-up
              credentials (Basic, a user named after the nonce, a random password) refused too,
              and the twin (the same request with the registry's credentials) answered 200: the
              refusal is authentication, of an image that is there. Without credentials to send
              (an existing cluster, no docker config entry) the 401 and its challenge stand
              alone, and the evidence says so. HTTP 403 is authorization refusing an anonymous
              identity it accepted: weaker.
SUCCEEDED too: the made-up credentials were answered 200 with the manifest. The registry (or a
              front before it) asks for an Authorization header and takes any: distribution's
              `auth: silly`, a proxy that only checks the header is there. Anyone can pull.
INCONCLUSIVE: anything else (404: the image is not there; a 5xx; no connection; TLS failure).
"""
import base64
import secrets

from kubeprobe import oci
from kubeprobe.context import Unavailable
from kubeprobe.outcome import Authority, Observation
from kubeprobe.supplychain import Unconfigured

TARGETS = "registry"


def _answer(answer: oci.Answer) -> dict:
    return {"status": answer.status,
            "www-authenticate": answer.headers.get("www-authenticate"),
            "docker-content-digest": answer.headers.get("docker-content-digest"),
            "error codes": answer.error_code() or None}


def run(ctx, target):
    chain = ctx.supply_chain
    try:
        anonymous, ref = chain.registry(anonymous=True)
    except (Unconfigured, AttributeError) as exc:
        raise Unavailable(str(exc) if chain else "no private registry named (pass "
                          "--registry-image REF)") from None
    what = f"anonymous GET /v2/{ref.repository}/manifests/{ref.reference} on {ref.host}"
    evidence = {"request": what, "registry": chain.describe()}
    try:
        answer = anonymous.get_manifest(ref.repository, ref.reference, anonymous=True)
    except oci.RegistryError as exc:
        return Observation.inconclusive(f"{what}: {exc}", **evidence)
    evidence["anonymous answer"] = _answer(answer)
    ctx.note(f"{what}: HTTP {answer.status}")
    if answer.status == 200:
        return Observation.succeeded(
            f"{what} answered 200 with the manifest "
            f"({answer.headers.get('docker-content-digest') or oci.sha256_digest(answer.body)}):"
            " anonymous pulls are open", **evidence)
    if answer.status == 403:
        return Observation.blocked(Authority.HTTP_403, f"{what} answered 403: the registry "
                                   "accepted the anonymous identity, only authorization "
                                   "refused it", **evidence)
    if answer.status != 401:
        return Observation.inconclusive(f"{what} answered HTTP {answer.status} "
                                        f"({answer.error_code() or 'no error code'}): "
                                        "neither a pull nor an authentication refusal",
                                        **evidence)
    challenge = answer.headers.get("www-authenticate", "")
    if not challenge:
        return Observation.inconclusive(f"{what} answered 401 without a WWW-Authenticate "
                                        "challenge: not a registry's authentication refusal",
                                        **evidence)
    made_up = f"kubeprobe-{ctx.nonce}"
    basic = base64.b64encode(f"{made_up}:{secrets.token_urlsafe(18)}".encode()).decode()
    try:
        forged = anonymous.get_manifest(ref.repository, ref.reference,
                                        authorization=f"Basic {basic}")
    except oci.RegistryError as exc:
        return Observation.inconclusive(f"{what}: 401, but the same request with made-up "
                                        f"credentials failed: {exc}", **evidence)
    evidence["made-up credentials"] = f"Basic, user {made_up}, a random password"
    evidence["made-up credentials answer"] = _answer(forged)
    if forged.status == 200:
        return Observation.succeeded(
            f"{what} answered 401 ({challenge}), but the same request with made-up credentials "
            f"(user {made_up}, a random password) answered 200 with the manifest "
            f"({forged.headers.get('docker-content-digest') or oci.sha256_digest(forged.body)}):"
            " the registry takes any credential, so anyone can pull", **evidence)
    if not chain.has_credentials():
        evidence["twin"] = ("not sent: no registry credentials (the lab's, or a docker "
                            "config.json entry for the registry)")
        return Observation.blocked(Authority.HTTP_401, f"{what} answered 401 with the challenge "
                                   f"{challenge!r}; made-up credentials were answered HTTP "
                                   f"{forged.status}", **evidence)
    authenticated, _ = chain.registry(anonymous=False)
    try:
        twin = authenticated.get_manifest(ref.repository, ref.reference)
    except oci.RegistryError as exc:
        return Observation.inconclusive(f"{what}: 401, but the authenticated twin failed: "
                                        f"{exc}", **evidence)
    evidence["twin (with the registry's credentials)"] = _answer(twin)
    if twin.status != 200:
        return Observation.inconclusive(
            f"{what} answered 401, but the same request with credentials answered HTTP "
            f"{twin.status}: the refusal is not shown to be about authentication of an image "
            "that is there", **evidence)
    return Observation.blocked(
        Authority.HTTP_401, f"{what} answered 401 ({challenge}), made-up credentials HTTP "
        f"{forged.status}; with the registry's credentials the same request answered 200 "
        f"({twin.headers.get('docker-content-digest', '')})", **evidence)
