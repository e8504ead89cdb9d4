"""Creating agent homes: a new mesh (``zmesh init``), client credentials, join tokens.

Joining an existing mesh lives in :mod:`zambeze_mesh.agent.join`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from zambeze_mesh.errors import AlreadyExists, InvalidInput
from zambeze_mesh.security import tokens as tokmod
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.identity import Identity, validate_name
from zambeze_mesh.security.keyfiles import encrypt_key_pem, unlock_ca_key
from zambeze_mesh.security.keys import cert_from_der, der_to_pem, key_to_pem, write_private_file
from zambeze_mesh.settings.config import AgentConfig, split_hostport
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import Store
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store import tokens as tokstore
from zambeze_mesh.store.tokens import create_token as create_token  # for the CLI


def hosts_for(*addresses: str) -> list[str]:
    """The distinct hosts of ``host:port`` addresses, for certificate SANs."""
    hosts: list[str] = []
    for addr in addresses:
        host, _ = split_hostport(addr)
        if host in ("0.0.0.0", "::"):
            continue
        if host not in hosts:
            hosts.append(host)
    return hosts


def prepare_home(home: Home) -> None:
    """Refuse an initialised home; create the directory with mode 0700."""
    if home.exists():
        raise AlreadyExists(f"{home.root} already holds an agent ({home.config.name} exists)")
    home.root.mkdir(parents=True, exist_ok=True)
    os.chmod(home.root, 0o700)


def init_mesh(
    home: Home,
    *,
    name: str,
    listen: str,
    advertise: str = "",
    mesh: str = "default",
    labels: dict[str, str] | None = None,
    ca_passphrase: bytes | None = None,
    **config: object,
) -> AgentConfig:
    """Create a new mesh: its CA, and this agent's key and certificate, in ``home``.

    With ``ca_passphrase`` the CA key is stored encrypted with it.
    """
    validate_name(name, "agent name")
    validate_name(mesh, "mesh name")
    cfg = AgentConfig(
        name=name,
        mesh=mesh,
        listen=listen,
        advertise=advertise,
        labels=dict(labels or {}),
        **config,  # type: ignore[arg-type]
    )
    prepare_home(home)
    ca = MeshCA.create(mesh)
    key, cert_der = ca.issue(Identity.agent(mesh, name), hosts_for(cfg.advertise, cfg.listen))
    ca_key = ca.key_pem if ca_passphrase is None else encrypt_key_pem(ca.key_pem, ca_passphrase)
    write_identity(home, cfg, key_to_pem(key), cert_der, ca, keep_ca_key=True, ca_key_pem=ca_key)
    return cfg


def write_identity(
    home: Home,
    cfg: AgentConfig,
    key_pem: bytes,
    cert_der: bytes,
    ca: MeshCA,
    *,
    keep_ca_key: bool,
    ca_key_pem: bytes | None = None,
) -> Store:
    """Write key files, database and config of a new home (the config last, as the marker).

    ``ca_key_pem`` is the CA key as stored (default: ``ca``'s key, unencrypted).
    """
    store = Store(home.db)
    idstore.save_identity(
        store,
        idstore.StoredIdentity(
            name=cfg.name,
            mesh=cfg.mesh,
            key_pem=key_pem,
            cert_der=cert_der,
            ca_cert_der=ca.cert_der,
            ca_key_pem=(ca_key_pem or ca.key_pem) if keep_ca_key else None,
            incarnation=0,
        ),
    )
    os.chmod(home.db, 0o600)
    (home.root / cfg.data_dir).mkdir(parents=True, exist_ok=True)
    cfg.save(home.config)
    return store


def open_store(home: Home) -> Store:
    """Open the store of an initialised home."""
    home.require()
    return Store(home.db)


def parse_ttl(value: str) -> int:
    """``90s``, ``15m``, ``1h``, ``7d`` (or plain seconds) → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    v = value.strip().lower()
    try:
        if v and v[-1] in units:
            seconds = int(float(v[:-1]) * units[v[-1]])
        else:
            seconds = int(float(v))
    except ValueError:
        raise InvalidInput(f"bad duration {value!r}: use e.g. 90s, 15m, 1h, 7d") from None
    if seconds <= 0 or seconds > 365 * 86400:
        raise InvalidInput(f"duration {value!r} must be between 1s and 365d")
    return seconds


def revoke_token(store: Store, token: str) -> str:
    """Revoke a token given in full (or by its public id); returns the id."""
    token_id = (
        token if len(token) == 32 and "-" not in token else tokmod.parse_token(token).token_id
    )
    tokstore.revoke_token(store, token_id)
    return token_id


@dataclass(frozen=True)
class ClientBundle:
    """Files written for a client in another language."""

    key: Path
    cert: Path
    ca: Path
    identity: str


def issue_client(
    store: Store,
    name: str,
    out: Path,
    *,
    ttl_days: int = 365,
    ca_passphrase: bytes | None = None,
) -> ClientBundle:
    """Issue a client certificate (``spiffe://<mesh>/client/<name>``) into ``out``.

    Needs the CA key, so it runs on a CA-holding agent's home (``ca_passphrase``
    when that key is encrypted).
    """
    ident = idstore.load_identity(store)
    if ident.ca_key_pem is None:
        raise InvalidInput(
            "this agent does not hold the mesh CA key: run `zmesh cert issue-client` on the"
            " agent that created the mesh"
        )
    ca = MeshCA(cert_from_der(ident.ca_cert_der), unlock_ca_key(ident.ca_key_pem, ca_passphrase))
    client = Identity.client(ident.mesh, name)
    key, cert_der = ca.issue(client, [], validity_days=ttl_days)
    out.mkdir(parents=True, exist_ok=True)
    bundle = ClientBundle(out / "client.key", out / "client.crt", out / "ca.crt", client.uri)
    write_private_file(bundle.key, key_to_pem(key))
    bundle.cert.write_bytes(der_to_pem(cert_der))
    bundle.ca.write_bytes(ca.cert_pem)
    return bundle


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)
