"""Small X.509 toolkit (cryptography): throwaway CAs and certificates.

Used by attacks (a foreign CA the cluster has never seen, a CSR for the cluster signer) and by
the self-tests (a kubeadm-shaped PKI for real etcd). Keys are EC P-256: fast to generate.
"""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeprobe.net import ClientCert


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    def client_cert(self, label: str) -> ClientCert:
        return ClientCert(self.cert_pem, self.key_pem, label)

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting this certificate (`ssl` loads key material only
        from files: they live in a private temporary directory for the call)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
            cert.write_bytes(self.cert_pem)
            key.write_bytes(self.key_pem)
            key.chmod(0o600)
            context.load_cert_chain(cert, key)
        return context


@dataclass(frozen=True)
class CertificateAuthority:
    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str, days: int = 2) -> "CertificateAuthority":
        key = new_key()
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(_name(common_name)).issuer_name(_name(common_name))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(common_name, cert, key)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    def issue(self, common_name: str, organization: str | None = None, *, client: bool = True,
              server: bool = False, hosts: tuple[str, ...] = (), days: int = 2) -> Issued:
        key = new_key()
        now = dt.datetime.now(dt.timezone.utc)
        usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + \
                 ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(common_name, organization)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if hosts:
            names = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)


def tls_server(hosts: tuple[str, ...], common_name: str = "kubeprobe-receiver",
               days: int = 2) -> tuple[CertificateAuthority, Issued]:
    """A per-run CA and a server certificate it issued for `hosts` (IP or DNS SANs): the CA
    goes to the client (e.g. a webhook kubeconfig's certificate-authority-data)."""
    ca = CertificateAuthority.create(f"{common_name} CA", days=days)
    return ca, ca.issue(common_name, client=False, server=True, hosts=hosts, days=days)


def load_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS server context from the operator's PEM certificate (chain) and key files.
    ValueError with one line saying what is wrong: unreadable, not PEM, or not a pair."""
    for flag, path in (("certificate", cert_file), ("key", key_file)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"the {flag} {path} cannot be read "
                             f"({exc.strerror or type(exc).__name__})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "MISMATCH" in reason.upper():
            raise ValueError(f"the key {key_file} is not the key of the certificate "
                             f"{cert_file}") from None
        raise ValueError(f"the certificate {cert_file} and key {key_file} are not a PEM "
                         f"certificate and its unencrypted private key ({reason})") from None
    return context


def csr_pem(key: ec.EllipticCurvePrivateKey, common_name: str,
            organization: str | None = None) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name(common_name, organization))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def describe(pem: bytes) -> dict[str, str]:
    """Subject, issuer and validity of a PEM certificate, for evidence."""
    cert = x509.load_pem_x509_certificate(pem)
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.isoformat()}


def issuing_ca(cert_pem: bytes, bundle_pem: bytes) -> x509.Certificate | None:
    """The CA certificate of `bundle_pem` whose key signed `cert_pem` (name match AND a
    verified signature: a CA that only shares the name does not count), or None."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    for ca in x509.load_pem_x509_certificates(bundle_pem):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def b64_pem(pem: bytes) -> str:
    """The base64 form Kubernetes API fields (CSR `request`) carry PEM in."""
    return base64.b64encode(pem).decode()


def b64_decode(value: str | bytes) -> bytes:
    """The kubernetes client returns `byte` fields as base64 strings: decode them."""
    return base64.b64decode(value)
