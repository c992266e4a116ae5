"""A small OCI distribution-API client: push a docker-archive tar, read manifests.

No container engine here: images are docker-archive tars (kubeprobe.images). `push_archive`
turns one into an OCI image (config + uncompressed layer blobs + an OCI manifest) and
uploads it: `HEAD` each blob, monolithic upload (`POST /v2/<repo>/blobs/uploads/`, then `PUT
<location>?digest=`), `PUT /v2/<repo>/manifests/<tag>`. The manifest digest is computed
here and checked against the registry's `Docker-Content-Digest`.

Authentication follows the registry's challenge: `WWW-Authenticate: Basic` (distribution's
htpasswd) is answered with the user's credentials, `Bearer realm=...,service=...,scope=...`
(token servers: Docker Hub, GHCR, Harbor, ...) by fetching a token from the realm with them.
Credentials come from the caller, or from a docker config.json (`auths.<host>.auth`).

    reg = Registry("registry.example:5443", username="u", password="p", ca_file="ca.crt")
    digest = reg.push_archive(Path("agent.tar"), "kubeprobe/agent", "v1")
    reg.reference("kubeprobe/agent", digest)   # registry.example:5443/kubeprobe/agent@sha256:...
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)"
                         r"[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9a-fA-F:]+\](?::\d{1,5})?$")


class RegistryError(RuntimeError):
    """One line: what the registry answered (status and its error code) or why it could not
    be asked."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def check_repository(name: str) -> str:
    if not _REPOSITORY.match(name) or len(name) > 255:
        raise ValueError(f"not a valid repository name: {name!r} (lowercase path components "
                         "such as kubeprobe/agent)")
    return name


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise ValueError(f"not a valid tag: {tag!r}")
    return tag


def check_host(host: str) -> str:
    if not _HOST.match(host):
        raise ValueError(f"not a registry host[:port]: {host!r}")
    return host


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def docker_config_credentials(host: str, config_path: Path | None = None
                              ) -> tuple[str, str] | None:
    """(username, password) for `host` from a docker config.json ($DOCKER_CONFIG/config.json
    or ~/.docker/config.json), or None. Only inline `auth`/`username`+`password` entries
    (credential helpers are not run)."""
    if config_path is None:
        base = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
        config_path = Path(base) / "config.json"
    try:
        auths = json.loads(config_path.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    for key, entry in auths.items():
        name = re.sub(r"^https?://", "", key).split("/", 1)[0]
        if name != host:
            continue
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
        if entry.get("username"):
            return entry["username"], entry.get("password", "")
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_code(self) -> str:
        """The distribution error code (UNAUTHORIZED, MANIFEST_UNKNOWN, ...) if any."""
        try:
            errors = self.json().get("errors") or []
        except (ValueError, AttributeError):
            return ""
        return ",".join(str(e.get("code", "")) for e in errors)


class Registry:
    """One registry, spoken to over HTTPS (`insecure_http=True`: plain HTTP)."""

    def __init__(self, host: str, *, username: str | None = None, password: str | None = None,
                 ca_file: Path | str | None = None, insecure_http: bool = False,
                 timeout: tuple[float, float] = (5.0, 60.0), address: str | None = None):
        self.host = check_host(host)
        # `address` connects elsewhere than `host` names (like curl --connect-to); the TLS
        # certificate is then checked against `address`.
        self.base = f"{'http' if insecure_http else 'https'}://{address or host}"
        self.credentials = (username, password or "") if username else None
        self.verify: bool | str = str(ca_file) if ca_file else True
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment for a lab registry
        self._tokens: dict[str, str] = {}
        self._basic = False

    # -- transport ------------------------------------------------------------------
    def request(self, method: str, path_or_url: str, *, scope: str, anonymous: bool = False,
                **kw) -> Answer:
        """One request, answering the registry's 401 challenge once (unless `anonymous`)."""
        url = path_or_url if path_or_url.startswith("http") else self.base + path_or_url
        headers = dict(kw.pop("headers", {}))
        if not anonymous:
            headers.update(self._auth_header(scope))
        answer = self._send(method, url, headers=headers, **kw)
        if answer.status == 401 and not anonymous:
            challenge = answer.headers.get("www-authenticate", "")
            if self._answer_challenge(challenge, scope):
                headers.update(self._auth_header(scope))
                answer = self._send(method, url, headers=headers, **kw)
        return answer

    def _send(self, method: str, url: str, **kw) -> Answer:
        try:
            r = self.session.request(method, url, verify=self.verify, timeout=self.timeout,
                                     allow_redirects=True, **kw)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"TLS to {self.base} failed (is the CA given?): "
                                f"{_short(exc)}") from None
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach {self.base}: {_short(exc)}") from None
        return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

    def _auth_header(self, scope: str) -> dict[str, str]:
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        if self._basic and self.credentials:
            raw = f"{self.credentials[0]}:{self.credentials[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _answer_challenge(self, header: str, scope: str) -> bool:
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if not self.credentials:
                return False
            self._basic = True
            return True
        if scheme == "bearer" and params.get("realm"):
            query = {"service": params.get("service", ""), "scope": scope}
            auth = self.credentials if self.credentials else None
            try:
                r = self.session.get(params["realm"], params=query, auth=auth,
                                     verify=self.verify, timeout=self.timeout)
            except requests.RequestException as exc:
                raise RegistryError(f"token request to {params['realm']} failed: "
                                    f"{_short(exc)}") from None
            if r.status_code != 200:
                raise RegistryError(f"token server {params['realm']} answered HTTP "
                                    f"{r.status_code} for scope {scope}", r.status_code)
            body = r.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                raise RegistryError(f"token server {params['realm']} gave no token")
            self._tokens[scope] = token
            return True
        return False

    def _expect(self, answer: Answer, ok: tuple[int, ...], what: str) -> Answer:
        if answer.status not in ok:
            code = answer.error_code()
            raise RegistryError(f"{what}: HTTP {answer.status}{' ' + code if code else ''} from "
                                f"{self.host}", answer.status)
        return answer

    # -- API ------------------------------------------------------------------------
    def ping(self) -> Answer:
        """GET /v2/ (authenticated if credentials were given)."""
        return self.request("GET", "/v2/", scope="registry:catalog:*")

    def blob_exists(self, repository: str, digest: str) -> bool:
        answer = self.request("HEAD", f"/v2/{repository}/blobs/{digest}",
                              scope=f"repository:{repository}:pull")
        return answer.status == 200

    def push_blob(self, repository: str, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256_digest(data)
        scope = f"repository:{repository}:pull,push"
        if self.blob_exists(repository, digest):
            return digest
        started = self._expect(self.request("POST", f"/v2/{repository}/blobs/uploads/",
                                            scope=scope), (202,), f"starting a blob upload to "
                                                                  f"{repository}")
        location = started.headers.get("location", "")
        if not location:
            raise RegistryError(f"{self.host} gave no upload location for {repository}")
        if not location.startswith("http"):
            location = self.base + location
        location += ("&" if "?" in location else "?") + f"digest={digest}"
        self._expect(self.request("PUT", location, scope=scope, data=data,
                                  headers={"Content-Type": "application/octet-stream"}),
                     (201,), f"uploading blob {digest[:19]} to {repository}")
        return digest

    def put_manifest(self, repository: str, reference: str, manifest: bytes,
                     media_type: str = OCI_MANIFEST) -> str:
        digest = sha256_digest(manifest)
        answer = self._expect(self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull,push", data=manifest,
            headers={"Content-Type": media_type}), (201,), f"putting the manifest "
                                                          f"{repository}:{reference}")
        said = answer.headers.get("docker-content-digest")
        if said and said != digest:
            raise RegistryError(f"{self.host} stored {repository}:{reference} as {said}, "
                                f"not {digest}")
        return digest

    def get_manifest(self, repository: str, reference: str, anonymous: bool = False,
                     authorization: str | None = None) -> Answer:
        """The raw answer to GET /v2/<repo>/manifests/<ref> (status, headers, body).
        `authorization`: send this Authorization header as it is, once, answering no challenge
        (a made-up credential, say)."""
        headers = {"Accept": ACCEPT}
        if authorization is not None:
            headers["Authorization"] = authorization
            anonymous = True
        return self.request("GET", f"/v2/{repository}/manifests/{reference}",
                            scope=f"repository:{repository}:pull", anonymous=anonymous,
                            headers=headers)

    def manifest_digest(self, repository: str, reference: str) -> str:
        answer = self._expect(self.get_manifest(repository, reference), (200,),
                              f"reading the manifest {repository}:{reference}")
        return answer.headers.get("docker-content-digest") or sha256_digest(answer.body)

    def push_archive(self, tar: Path, repository: str, tag: str) -> str:
        """Push a docker-archive tar (one image) as an OCI image; returns its manifest digest."""
        check_repository(repository)
        check_tag(tag)
        manifest_bytes, blobs = oci_image_from_archive(tar)
        for digest, data in blobs.items():
            self.push_blob(repository, data, digest)
        return self.put_manifest(repository, tag, manifest_bytes)

    def reference(self, repository: str, digest: str) -> str:
        return f"{self.host}/{repository}@{digest}"


def oci_image_from_archive(tar: Path) -> tuple[bytes, dict[str, bytes]]:
    """(OCI manifest bytes, {digest: blob}) for the one image in a docker-archive tar."""
    with tarfile.open(tar) as archive:
        entries = json.load(archive.extractfile("manifest.json"))
        if len(entries) != 1:
            raise ValueError(f"{tar}: expected one image, found {len(entries)}")
        entry = entries[0]
        config = archive.extractfile(entry["Config"]).read()
        layers = [archive.extractfile(name).read() for name in entry["Layers"]]
    blobs = {sha256_digest(config): config}
    descriptors = []
    for layer in layers:
        digest = sha256_digest(layer)
        blobs[digest] = layer
        descriptors.append({"mediaType": OCI_LAYER, "digest": digest, "size": len(layer)})
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config),
                           "size": len(config)},
                "layers": descriptors}
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), blobs


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."
