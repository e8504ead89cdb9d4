"""The mesh certificate authority: creates the CA, signs CSRs, verifies member certificates."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zambeze_mesh.errors import FailedPrecondition, InvalidInput, Unauthenticated
from zambeze_mesh.security.identity import (
    Identity,
    identity_from_cert,
    mesh_from_ca_cert,
    mesh_uri,
    validate_name,
)
from zambeze_mesh.security.keys import (
    PrivateKey,
    cert_from_der,
    cert_from_pem,
    cert_to_der,
    cert_to_pem,
    generate_key,
    key_from_pem,
    key_to_pem,
)

#: Certificates are back-dated by this much to tolerate clock skew between hosts.
BACKDATE = dt.timedelta(minutes=5)
MAX_HOSTS = 32

_DNS_RE = re.compile(
    r"(?=.{1,253}$)(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def cert_digest(cert_der: bytes) -> str:
    """Hex SHA-256 of a certificate's DER (the pin carried in join tokens)."""
    return hashlib.sha256(cert_der).hexdigest()


def host_sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP SANs for IP literals (``[::1]`` brackets allowed) and DNS SANs for names."""
    if len(hosts) > MAX_HOSTS:
        raise InvalidInput(f"too many hosts ({len(hosts)} > {MAX_HOSTS})")
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in hosts:
        host = raw.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _DNS_RE.fullmatch(host):
            raise InvalidInput(f"invalid host {raw!r}: not an IP address or DNS name")
        out.append(x509.DNSName(host.rstrip(".").lower()))
    return out


def host_of(address: str) -> str:
    """The host part of ``host:port`` or ``[v6]:port`` (an address without a port is kept)."""
    address = address.strip()
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise InvalidInput(f"invalid address {address!r}: unbalanced '['")
        return address[1:end]
    if address.count(":") == 1:
        return address.rsplit(":", 1)[0]
    return address


def hosts_from_addresses(addresses: Sequence[str]) -> list[str]:
    """Hosts of advertised ``host:port`` addresses, for :meth:`MeshCA.sign_csr`."""
    return [host_of(a) for a in addresses if a.strip()]


class MeshCA:
    """A mesh's CA certificate, and its private key when this process holds it."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey | None = None) -> None:
        self._cert = cert
        self._key = key
        self._der = cert_to_der(cert)
        self._mesh = mesh_from_ca_cert(cert)
        if key is not None and key.public_key() != cert.public_key():
            raise InvalidInput("CA key does not match the CA certificate")

    @classmethod
    def create(
        cls, mesh: str, validity_days: int = 3650, *, now: dt.datetime | None = None
    ) -> MeshCA:
        """A new self-signed EC P-256 CA for ``mesh``."""
        validate_name(mesh, "mesh name")
        if validity_days <= 0:
            raise InvalidInput("validity_days must be positive")
        now = now or _utcnow()
        key = generate_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"zambeze-mesh CA {mesh}")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(mesh_uri(mesh))]),
                critical=False,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def from_pem(
        cls, cert_pem: bytes, key_pem: bytes | None = None, password: bytes | None = None
    ) -> MeshCA:
        """Load a CA from PEM; without ``key_pem`` it can verify but not sign.

        An encrypted ``key_pem`` needs its ``password``.
        """
        cert = cert_from_pem(cert_pem)
        key = key_from_pem(key_pem, password) if key_pem is not None else None
        return cls(cert, key)

    @property
    def mesh(self) -> str:
        """The mesh name recorded in the CA certificate."""
        return self._mesh

    @property
    def cert(self) -> x509.Certificate:
        """The CA certificate."""
        return self._cert

    @property
    def cert_der(self) -> bytes:
        """DER of the CA certificate."""
        return self._der

    @property
    def cert_pem(self) -> bytes:
        """PEM of the CA certificate."""
        return cert_to_pem(self._cert)

    @property
    def key_pem(self) -> bytes:
        """PEM of the CA key; FailedPrecondition when this process does not hold it."""
        return key_to_pem(self._require_key())

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the CA certificate's DER."""
        return cert_digest(self._der)

    @property
    def can_sign(self) -> bool:
        """True when this process holds the CA key."""
        return self._key is not None

    def sign_data(self, data: bytes) -> bytes:
        """ECDSA-SHA256 signature of ``data`` by the CA key (revocations)."""
        return self._require_key().sign(data, ec.ECDSA(hashes.SHA256()))

    def _require_key(self) -> PrivateKey:
        if self._key is None:
            raise FailedPrecondition(f"this agent does not hold the CA key of mesh {self._mesh}")
        return self._key

    def sign_csr(
        self,
        csr_der: bytes,
        identity: Identity,
        hosts: Sequence[str] = (),
        validity_days: int = 365,
        *,
        now: dt.datetime | None = None,
    ) -> bytes:
        """Sign a CSR for ``identity``; returns the certificate DER.

        Only the CSR's public key is used (after checking the CSR's own signature); the
        subject, URI SAN and IP/DNS SANs (from ``hosts``) are decided here. The certificate
        is valid for both TLS server and client auth and never outlives the CA.
        """
        key = self._require_key()
        if identity.mesh != self._mesh:
            raise InvalidInput(f"identity {identity} is not in mesh {self._mesh}")
        if validity_days <= 0:
            raise InvalidInput("validity_days must be positive")
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError as exc:
            raise InvalidInput(f"CSR does not parse: {exc}") from None
        if not csr.is_signature_valid:
            raise InvalidInput("CSR signature is invalid")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, ec.SECP256R1
        ):
            raise InvalidInput("CSR key must be an EC P-256 key")
        return self._issue_for(public, identity, hosts, validity_days, now or _utcnow(), key)

    def _issue_for(
        self,
        public: ec.EllipticCurvePublicKey,
        identity: Identity,
        hosts: Sequence[str],
        validity_days: int,
        now: dt.datetime,
        ca_key: PrivateKey,
    ) -> bytes:
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        sans.extend(host_sans(hosts))
        not_after = min(now + dt.timedelta(days=validity_days), self._cert.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert_to_der(cert)

    def issue(
        self,
        identity: Identity,
        hosts: Sequence[str] = (),
        validity_days: int = 365,
        *,
        now: dt.datetime | None = None,
    ) -> tuple[PrivateKey, bytes]:
        """Generate a key and sign a certificate for it: ``(key, cert_der)``."""
        ca_key = self._require_key()
        if identity.mesh != self._mesh:
            raise InvalidInput(f"identity {identity} is not in mesh {self._mesh}")
        key = generate_key()
        der = self._issue_for(
            key.public_key(), identity, hosts, validity_days, now or _utcnow(), ca_key
        )
        return key, der

    def verify(self, cert_der: bytes, *, now: dt.datetime | None = None) -> Identity:
        """:func:`verify_cert` against this CA."""
        return verify_cert(cert_der, self._cert, now=now, mesh=self._mesh)


def verify_cert(
    cert_der: bytes,
    ca_cert: x509.Certificate,
    *,
    now: dt.datetime | None = None,
    mesh: str | None = None,
) -> Identity:
    """Check that ``cert_der`` is a member certificate of the mesh of ``ca_cert``.

    Checks the CA's signature, the validity window, that it is not a CA certificate, and
    that its SPIFFE ID names the CA's mesh (or ``mesh`` when given). Returns the identity;
    raises Unauthenticated with the reason otherwise.
    """
    return verify_parsed_cert(_parse(cert_der), ca_cert, now=now, mesh=mesh)


def _parse(cert_der: bytes) -> x509.Certificate:
    try:
        return cert_from_der(cert_der)
    except InvalidInput as exc:
        raise Unauthenticated(str(exc)) from None


def verify_parsed_cert(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    *,
    now: dt.datetime | None = None,
    mesh: str | None = None,
) -> Identity:
    """:func:`verify_cert` for an already parsed certificate."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise Unauthenticated("certificate is not issued by this mesh's CA") from None
    check_validity(cert, now)
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise Unauthenticated("a CA certificate is not a member certificate")
    except x509.ExtensionNotFound:
        pass
    identity = identity_from_cert(cert)
    expected = mesh if mesh is not None else mesh_from_ca_cert(ca_cert)
    if identity.mesh != expected:
        raise Unauthenticated(f"certificate is for mesh {identity.mesh!r}, not {expected!r}")
    return identity


def check_validity(cert: x509.Certificate, now: dt.datetime | None = None) -> None:
    """Raise Unauthenticated when ``now`` is outside the certificate's validity window."""
    now = now or _utcnow()
    if now < cert.not_valid_before_utc:
        raise Unauthenticated(
            f"certificate is not valid before {cert.not_valid_before_utc.isoformat()}"
        )
    if now > cert.not_valid_after_utc:
        raise Unauthenticated(f"certificate expired at {cert.not_valid_after_utc.isoformat()}")
