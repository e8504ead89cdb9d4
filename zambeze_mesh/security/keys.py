"""EC P-256 keys, PEM/DER (de)serialization, CSRs, and private-key files (mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.security.identity import Identity

PrivateKey = ec.EllipticCurvePrivateKey

PRIVATE_FILE_MODE = 0o600


def generate_key() -> PrivateKey:
    """A new EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_to_der(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER of a private key."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_ec(key: object) -> PrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidInput("private key must be an EC P-256 key")
    return key


def key_from_pem(data: bytes, password: bytes | None = None) -> PrivateKey:
    """Load an EC P-256 private key from PEM (encrypted ones need ``password``)."""
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"private key does not parse: {exc}") from None
    return _check_ec(key)


def key_from_der(data: bytes) -> PrivateKey:
    """Load an unencrypted EC P-256 private key from DER."""
    try:
        key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"private key does not parse: {exc}") from None
    return _check_ec(key)


def public_key_to_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a public key."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_to_pem(cert: x509.Certificate) -> bytes:
    """PEM of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_to_der(cert: x509.Certificate) -> bytes:
    """DER of a certificate."""
    return cert.public_bytes(serialization.Encoding.DER)


def cert_from_pem(data: bytes) -> x509.Certificate:
    """Parse a PEM certificate (the first one if several); InvalidInput if it does not parse."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInput(f"certificate does not parse: {exc}") from None


def cert_from_der(data: bytes) -> x509.Certificate:
    """Parse a DER certificate; InvalidInput if it does not parse."""
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInput(f"certificate does not parse: {exc}") from None


def der_to_pem(cert_der: bytes) -> bytes:
    """Convert a DER certificate to PEM."""
    return cert_to_pem(cert_from_der(cert_der))


def make_csr(key: PrivateKey, identity: Identity) -> bytes:
    """A DER PKCS#10 CSR for ``identity`` signed by ``key`` (ECDSA-SHA256).

    The signer decides the final identity and SANs; the CSR proves possession of the key.
    """
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def write_private_key(path: str | os.PathLike[str], key: PrivateKey) -> None:
    """Write ``key`` as PEM to ``path`` with file mode 0600 (atomically replaced)."""
    write_private_file(path, key_to_pem(key))


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write secret bytes to ``path`` with mode 0600; the file is never world-readable.

    Writes a temporary sibling created with mode 0600 and renames it into place.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), PRIVATE_FILE_MODE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def read_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Load a PEM private key written by :func:`write_private_key`."""
    return key_from_pem(Path(path).read_bytes())
