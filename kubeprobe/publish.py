"""`kubeprobe image publish`: build the probe (agent) image, push it to the user's registry,
sign it when a key is given, and print the digest reference for `--probe-image`.

    kubeprobe image publish --registry HOST[:PORT] [--repository kubeprobe/agent] [--tag TAG]
                            [--username USER --password-stdin] [--ca-file FILE]
                            [--connect-to ADDRESS] [--sign-key cosign.key]

The image is what the lab and kind get (kubeprobe/agent.py: the static Go agent, uid 65532,
as a docker-archive), pushed as an OCI image by kubeprobe's own distribution-API client
(kubeprobe/oci.py): Basic and Bearer-token challenges answered with the credentials from
--username/--password-stdin, else $KUBEPROBE_REGISTRY_USERNAME/$KUBEPROBE_REGISTRY_PASSWORD,
else the docker config.json entry for the registry. With --sign-key, cosign (built from its Go
module, kubeprobe/lab/gotools.py) signs the digest with that key, offline
(--tlog-upload=false); its password comes from $COSIGN_PASSWORD.

stdout: the one line `HOST/REPOSITORY@sha256:...`. Exit 0; 2 for a bad option (one line);
1 when the build, the push or the signature failed (one `kubeprobe:` line).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kubeprobe import oci

DEFAULT_REPOSITORY = "kubeprobe/agent"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        print(f"kubeprobe image publish: {message}", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubeprobe image publish",
                     description="build, push and sign the probe image; print its digest ref")
    parser.add_argument("--registry", required=True, metavar="HOST[:PORT]")
    parser.add_argument("--repository", default=DEFAULT_REPOSITORY)
    parser.add_argument("--tag", default=None, help="default: the agent's source hash")
    parser.add_argument("--username", default=None)
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the registry password from stdin")
    parser.add_argument("--ca-file", type=Path, default=None,
                        help="CA bundle for the registry's TLS (default: system trust)")
    parser.add_argument("--connect-to", default=None, metavar="HOST:PORT",
                        help="connect there instead of --registry (like curl --connect-to); "
                             "the reference printed still names --registry")
    parser.add_argument("--sign-key", type=Path, default=None,
                        help="cosign private key: sign the pushed digest")
    return parser


def credentials(args, stdin=sys.stdin) -> tuple[str, str] | None:
    if args.password_stdin:
        return args.username, stdin.read().rstrip("\n")
    user = args.username or os.environ.get("KUBEPROBE_REGISTRY_USERNAME")
    password = os.environ.get("KUBEPROBE_REGISTRY_PASSWORD")
    if user and password is not None:
        return user, password
    return oci.docker_config_credentials(args.registry)


def validate(args) -> str | None:
    try:
        oci.check_host(args.registry)
        oci.check_repository(args.repository)
        if args.tag is not None:
            oci.check_tag(args.tag)
        if args.connect_to is not None:
            oci.check_host(args.connect_to)
    except ValueError as exc:
        return str(exc)
    if args.password_stdin and not args.username:
        return "--password-stdin needs --username"
    for option, path in (("--ca-file", args.ca_file), ("--sign-key", args.sign_key)):
        if path is not None and not path.is_file():
            return f"{option} {path} is not a readable file"
    return None


def sign(reference: str, key: Path, creds: tuple[str, str] | None, host: str,
         ca_file: Path | None) -> None:
    """cosign sign --key KEY --tlog-upload=false REF (offline), with the registry's
    credentials in a private docker config and its CA as the only trust when given."""
    from kubeprobe.lab import gotools
    cosign = gotools.cosign()
    with tempfile.TemporaryDirectory(prefix="kubeprobe-cosign-") as tmp:
        auths = {}
        if creds:
            import base64
            auths[host] = {"auth": base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()}
        config = Path(tmp) / "config.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"auths": auths}))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "DOCKER_CONFIG": tmp, "COSIGN_PASSWORD": os.environ.get("COSIGN_PASSWORD", ""),
               "COSIGN_YES": "true", "TUF_ROOT": str(Path(tmp) / "tuf")}
        if ca_file:
            env["SSL_CERT_FILE"] = str(ca_file)
        done = subprocess.run([str(cosign), "sign", "--key", str(key), "--tlog-upload=false",
                               "--yes", reference], env=env, capture_output=True, text=True,
                              timeout=300)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"cosign sign failed: {' '.join(tail)}")


def publish(args, stdin=sys.stdin, log=lambda line: None) -> str:
    from kubeprobe.agent import build_agent_image, source_hash
    creds = credentials(args, stdin)
    tar = build_agent_image()
    log(f"agent image {tar}")
    registry = oci.Registry(args.registry, address=args.connect_to, ca_file=args.ca_file,
                            username=creds[0] if creds else None,
                            password=creds[1] if creds else None)
    digest = registry.push_archive(tar, args.repository, args.tag or source_hash())
    reference = registry.reference(args.repository, digest)
    log(f"pushed {reference}")
    if args.sign_key:
        # cosign connects to the name in the reference: the --connect-to address when given
        # (the signature lives in the same repository, found by digest from either name).
        target = reference.replace(args.registry, args.connect_to, 1) if args.connect_to \
            else reference
        sign(target, args.sign_key, creds, args.connect_to or args.registry, args.ca_file)
        log(f"signed {digest} with {args.sign_key}")
    return reference


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "publish":
        print("usage: kubeprobe image publish --registry HOST[:PORT] [options] (see --help)",
              file=sys.stderr)
        return 2
    args = _parser().parse_args(argv[1:])
    bad = validate(args)
    if bad:
        print(f"kubeprobe image publish: {bad}", file=sys.stderr)
        return 2
    try:
        reference = publish(args, log=lambda line: print(f"[publish] {line}", file=sys.stderr))
    except (oci.RegistryError, RuntimeError, OSError) as exc:
        print(f"kubeprobe: image publish failed: {exc}", file=sys.stderr)
        return 1
    print(reference)
    return 0
