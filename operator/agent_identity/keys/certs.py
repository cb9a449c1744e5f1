"""X.509 certificates with ``cryptography``: the local control plane's PKI and the webhook's
serving certificate. (kopf's own self-signed path needs extra packages with known OpenSSL 3
problems, so we make the files ourselves and hand kopf their paths.)
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def new_authority(common_name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(
    authority: Authority, *, common_name: str, organization: str | None = None, server_names: list[str] | None = None
) -> KeyPair:
    """A client certificate, or a serving certificate when ``server_names`` (DNS names or IPs) are given."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(x509.Name(attributes), authority.certificate.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(n) for n in server_names]), critical=False)
    certificate = builder.sign(authority.key, hashes.SHA256())
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), private_key_pem(key))


def write_private(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def ensure_serving_certificate(directory: Path, *, server_names: list[str]) -> tuple[Path, Path, Path]:
    """``tls.crt``, ``tls.key`` and ``ca.crt`` in ``directory``: reused when present (mounted from
    a Secret in a cluster), else generated once (self-signed CA plus a serving certificate)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    if not (cert.exists() and key.exists() and ca.exists()):
        authority = new_authority("agent-identity-operator-webhook-ca")
        pair = issue(authority, common_name=server_names[0], server_names=server_names)
        write_private(ca, authority.cert_pem)
        write_private(key, pair.key_pem)
        write_private(cert, pair.cert_pem)
    return cert, key, ca
