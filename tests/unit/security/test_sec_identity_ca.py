"""Identities, keys, CSRs, certificate issuance and verification."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zambeze_mesh.errors import FailedPrecondition, InvalidInput, Unauthenticated
from zambeze_mesh.security import (
    Identity,
    MeshCA,
    cert_from_der,
    generate_key,
    hosts_from_addresses,
    identity_from_cert,
    key_to_pem,
    make_csr,
    read_private_key,
    verify_cert,
    write_private_key,
)


def test_identity_uri_roundtrip() -> None:
    ident = Identity("alpha", "agent", "node-1.olcf")
    assert ident.uri == "spiffe://alpha/agent/node-1.olcf"
    assert Identity.parse(ident.uri) == ident
    assert Identity.parse("spiffe://Mesh/client/Alice") == Identity.client("Mesh", "Alice")


@pytest.mark.parametrize(
    "uri",
    [
        "https://alpha/agent/a",
        "spiffe://alpha/agent",
        "spiffe://alpha/admin/a",
        "spiffe://alpha/agent/a/b",
        "spiffe://alpha/agent/-a",
        "spiffe://al pha/agent/a",
        "spiffe:///agent/a",
        "spiffe://alpha/agent/" + "a" * 64,
    ],
)
def test_identity_parse_rejects(uri: str) -> None:
    with pytest.raises(InvalidInput):
        Identity.parse(uri)


def test_identity_name_limits() -> None:
    Identity.agent("alpha", "a" * 63)
    with pytest.raises(InvalidInput):
        Identity.agent("alpha", "")
    with pytest.raises(InvalidInput):
        Identity.agent("alpha", "a/b")


def test_write_private_key_mode_0600(tmp_path: os.PathLike[str]) -> None:
    key = generate_key()
    path = os.path.join(tmp_path, "agent.key")
    with open(path, "wb") as fh:  # pre-existing world-readable file is replaced
        fh.write(b"old")
    os.chmod(path, 0o644)
    write_private_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert key_to_pem(read_private_key(path)) == key_to_pem(key)


def test_sign_csr_sans_and_usages(ca: MeshCA, agent_id: Identity) -> None:
    key = generate_key()
    der = ca.sign_csr(make_csr(key, agent_id), agent_id, ["127.0.0.1", "[::1]", "node1.example"])
    cert = cert_from_der(der)
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [agent_id.uri]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["node1.example"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a1"
    assert identity_from_cert(cert) == agent_id
    assert verify_cert(der, ca.cert) == agent_id
    assert ca.verify(der) == agent_id


def test_only_given_hosts(ca: MeshCA, agent_id: Identity) -> None:
    _, der = ca.issue(agent_id, [])
    san = cert_from_der(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san.value) == [x509.UniformResourceIdentifier(agent_id.uri)]


def test_sign_csr_signer_decides_identity(ca: MeshCA) -> None:
    key = generate_key()
    csr = make_csr(key, Identity.agent("alpha", "wanted"))
    der = ca.sign_csr(csr, Identity.agent("alpha", "granted"), [])
    assert verify_cert(der, ca.cert).name == "granted"


def test_sign_csr_rejects_bad_input(ca: MeshCA, agent_id: Identity) -> None:
    key = generate_key()
    csr = make_csr(key, agent_id)
    with pytest.raises(InvalidInput, match="does not parse"):
        ca.sign_csr(b"garbage", agent_id, [])
    tampered = bytearray(csr)
    tampered[-5] ^= 0x01  # inside the signature
    with pytest.raises(InvalidInput):
        ca.sign_csr(bytes(tampered), agent_id, [])
    with pytest.raises(InvalidInput, match="not in mesh"):
        ca.sign_csr(csr, Identity.agent("beta", "a1"), [])
    with pytest.raises(InvalidInput, match="invalid host"):
        ca.sign_csr(csr, agent_id, ["bad host!"])


def test_verify_only_ca_cannot_sign(ca: MeshCA, agent_id: Identity) -> None:
    public = MeshCA.from_pem(ca.cert_pem)
    assert public.mesh == "alpha" and public.digest == ca.digest and not public.can_sign
    with pytest.raises(FailedPrecondition):
        public.sign_csr(make_csr(generate_key(), agent_id), agent_id, [])
    full = MeshCA.from_pem(ca.cert_pem, ca.key_pem)
    assert full.can_sign
    _, der = full.issue(agent_id, ["127.0.0.1"])
    assert public.verify(der) == agent_id


def test_digest_is_sha256_of_der(ca: MeshCA) -> None:
    assert ca.digest == ca.cert.fingerprint(hashes.SHA256()).hex()
    assert len(ca.digest) == 64


def test_verify_rejects_other_ca(ca: MeshCA, other_ca: MeshCA, rogue_ca: MeshCA) -> None:
    _, der = rogue_ca.issue(Identity.agent("alpha", "a1"))
    with pytest.raises(Unauthenticated, match="not issued by"):
        verify_cert(der, ca.cert)
    _, der = other_ca.issue(Identity.agent("beta", "a1"))
    with pytest.raises(Unauthenticated):
        verify_cert(der, ca.cert)


def test_verify_rejects_other_mesh(ca: MeshCA, agent_id: Identity) -> None:
    _, der = ca.issue(agent_id)
    with pytest.raises(Unauthenticated, match="mesh"):
        verify_cert(der, ca.cert, mesh="gamma")


def test_verify_rejects_expired_and_not_yet_valid(ca: MeshCA, agent_id: Identity) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    _, der = ca.issue(agent_id, validity_days=1, now=past)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_cert(der, ca.cert)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    _, der = ca.issue(agent_id, now=future)
    with pytest.raises(Unauthenticated, match="not valid before"):
        verify_cert(der, ca.cert)


def test_verify_rejects_garbage_and_ca_cert(ca: MeshCA) -> None:
    with pytest.raises(Unauthenticated):
        verify_cert(b"\x30\x03junk", ca.cert)
    with pytest.raises(Unauthenticated):
        verify_cert(ca.cert_der, ca.cert)


def test_cert_never_outlives_ca(agent_id: Identity) -> None:
    short = MeshCA.create("alpha", validity_days=10)
    _, der = short.issue(agent_id, validity_days=365)
    assert cert_from_der(der).not_valid_after_utc == short.cert.not_valid_after_utc


def test_hosts_from_addresses(ca: MeshCA, agent_id: Identity) -> None:
    hosts = hosts_from_addresses(["127.0.0.1:7001", "[::1]:7002", "node1.example:1", "", "::1"])
    assert hosts == ["127.0.0.1", "::1", "node1.example", "::1"]
    _, der = ca.issue(agent_id, hosts)
    san = cert_from_der(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert len(san.value.get_values_for_type(x509.IPAddress)) == 2  # duplicates dropped
    with pytest.raises(InvalidInput):
        hosts_from_addresses(["[::1:7002"])
