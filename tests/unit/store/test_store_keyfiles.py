"""Private keys live in key files (0600 in a 0700 dir), never in the store."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from zambeze_mesh.agent.bootstrap import init_mesh, issue_client, open_store
from zambeze_mesh.errors import FailedPrecondition, InvalidInput
from zambeze_mesh.security import keyfiles
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.security.keys import key_to_pem
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store.db import MIGRATIONS, Store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_move_out_of_an_old_store(tmp_path: Path) -> None:
    """A store written before key files: the migration writes the files and wipes
    the key columns (no key bytes remain anywhere in the database file)."""
    path = tmp_path / "zmesh.db"
    old = Store(path, migrations=MIGRATIONS[:3])
    ca = MeshCA.create("m")
    key, cert_der = ca.issue(Identity.agent("m", "a"), ["127.0.0.1"])
    key_pem = key_to_pem(key)
    with old.tx() as db:
        db.execute(
            "INSERT INTO identity (id, name, mesh, key_pem, cert_der, ca_cert_der, ca_key_pem,"
            " incarnation, created_ms) VALUES (1, 'a', 'm', ?, ?, ?, ?, 3, 1)",
            (key_pem, cert_der, ca.cert_der, ca.key_pem),
        )
    old.close()

    store = Store(path)
    try:
        ident = idstore.load_identity(store)
        assert ident.key_pem == key_pem and ident.ca_key_pem == ca.key_pem
        assert ident.incarnation == 3
    finally:
        store.close()
    keys = tmp_path / "keys"
    assert _mode(keys) == 0o700
    assert _mode(keys / "agent.key") == 0o600 and _mode(keys / "ca.key") == 0o600
    row = sqlite3.connect(path).execute("SELECT key_pem, ca_key_pem FROM identity").fetchone()
    assert row == (b"", None)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("zmesh.db*"))
    body = key_pem.split(b"\n")[1]
    assert body not in raw and ca.key_pem.split(b"\n")[1] not in raw


def test_init_writes_key_files_only(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    init_mesh(home, name="a", listen="127.0.0.1:0", mesh="m")
    assert (home.root / "keys" / "agent.key").exists()
    assert (home.root / "keys" / "ca.key").exists()
    raw = home.db.read_bytes()
    assert b"PRIVATE KEY" not in raw


def test_ca_key_encrypted_at_rest(tmp_path: Path) -> None:
    """init with a passphrase: ca.key is encrypted; signing needs the passphrase."""
    home = Home(tmp_path / "h")
    init_mesh(home, name="a", listen="127.0.0.1:0", mesh="m", ca_passphrase=b"s3cret pass")
    pem = (home.root / "keys" / "ca.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    store = open_store(home)
    try:
        assert idstore.load_identity(store).ca_key_encrypted
        with pytest.raises(FailedPrecondition, match="encrypted"):
            issue_client(store, "c", tmp_path / "c1")
        with pytest.raises(InvalidInput, match="wrong CA passphrase"):
            issue_client(store, "c", tmp_path / "c2", ca_passphrase=b"nope")
        bundle = issue_client(store, "c", tmp_path / "c3", ca_passphrase=b"s3cret pass")
        assert bundle.key.exists()
    finally:
        store.close()


def test_passphrase_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pp"
    f.write_bytes(b"line one\nignored\n")
    assert keyfiles.read_passphrase(f) == b"line one"
    monkeypatch.setenv("ZMESH_CA_PASSPHRASE_FILE", str(f))
    assert keyfiles.passphrase_from(None) == b"line one"
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(InvalidInput, match="empty"):
        keyfiles.read_passphrase(tmp_path / "empty")
    with pytest.raises(InvalidInput, match="cannot read"):
        keyfiles.read_passphrase(tmp_path / "missing")
