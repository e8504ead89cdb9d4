"""Mesh identities: ``spiffe://<mesh>/<role>/<name>`` carried in a certificate's URI SAN."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from cryptography import x509

from zambeze_mesh.errors import InvalidInput, Unauthenticated

Role = Literal["agent", "client"]
ROLES: tuple[Role, ...] = ("agent", "client")

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}", re.IGNORECASE)
_SCHEME = "spiffe://"


def validate_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid agent/client/mesh name, else raise InvalidInput.

    Names are 1-63 characters of ``[a-z0-9._-]`` (any case), starting with a letter or digit.
    """
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidInput(
            f"invalid {what} {value!r}: use 1-63 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a certificate belongs to: an agent or a client of one mesh."""

    mesh: str
    role: Role
    name: str

    def __post_init__(self) -> None:
        validate_name(self.mesh, "mesh name")
        if self.role not in ROLES:
            raise InvalidInput(f"invalid role {self.role!r}: expected 'agent' or 'client'")
        validate_name(self.name, f"{self.role} name")

    @property
    def uri(self) -> str:
        """The SPIFFE ID, ``spiffe://<mesh>/<role>/<name>``."""
        return f"{_SCHEME}{self.mesh}/{self.role}/{self.name}"

    @property
    def is_agent(self) -> bool:
        """True for agent identities."""
        return self.role == "agent"

    @classmethod
    def agent(cls, mesh: str, name: str) -> Identity:
        """An agent identity."""
        return cls(mesh, "agent", name)

    @classmethod
    def client(cls, mesh: str, name: str) -> Identity:
        """A client identity."""
        return cls(mesh, "client", name)

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """Parse ``spiffe://<mesh>/<role>/<name>``; raise InvalidInput when malformed."""
        if not isinstance(uri, str) or not uri.startswith(_SCHEME):
            raise InvalidInput(f"invalid identity {uri!r}: expected spiffe://<mesh>/<role>/<name>")
        parts = uri[len(_SCHEME) :].split("/")
        if len(parts) != 3:
            raise InvalidInput(f"invalid identity {uri!r}: expected spiffe://<mesh>/<role>/<name>")
        mesh, role, name = parts
        if role not in ROLES:
            raise InvalidInput(f"invalid identity {uri!r}: role must be 'agent' or 'client'")
        return cls(mesh, cast(Role, role), name)

    def __str__(self) -> str:
        return self.uri


def mesh_uri(mesh: str) -> str:
    """The SPIFFE trust-domain URI of a mesh (put in the CA certificate)."""
    return f"{_SCHEME}{validate_name(mesh, 'mesh name')}"


def _uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


def identity_from_cert(cert: x509.Certificate | bytes) -> Identity:
    """The identity in a certificate's single ``spiffe://`` URI SAN.

    Accepts a parsed certificate or DER bytes. Raises Unauthenticated when the certificate
    carries no, several, or a malformed SPIFFE ID.
    """
    if isinstance(cert, bytes | bytearray):
        try:
            cert = x509.load_der_x509_certificate(bytes(cert))
        except ValueError as exc:
            raise Unauthenticated(f"certificate does not parse: {exc}") from None
    uris = [u for u in _uri_sans(cert) if u.startswith(_SCHEME)]
    if len(uris) != 1:
        raise Unauthenticated(
            f"certificate must carry exactly one spiffe:// URI SAN, found {len(uris)}"
        )
    try:
        return Identity.parse(uris[0])
    except InvalidInput as exc:
        raise Unauthenticated(f"certificate identity: {exc}") from None


def mesh_from_ca_cert(cert: x509.Certificate) -> str:
    """The mesh name recorded in a mesh CA certificate (its ``spiffe://<mesh>`` URI SAN)."""
    for uri in _uri_sans(cert):
        if uri.startswith(_SCHEME):
            mesh = uri[len(_SCHEME) :].rstrip("/")
            if "/" not in mesh and _NAME_RE.fullmatch(mesh):
                return mesh
    raise InvalidInput("not a mesh CA certificate: no spiffe://<mesh> URI SAN")
