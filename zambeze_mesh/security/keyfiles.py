"""Private keys of an agent home, kept in files readable only by the agent.

``<home>/keys/agent.key`` holds the agent's key and, on a CA holder,
``<home>/keys/ca.key`` the mesh CA key. The directory has mode 0700 and the
files 0600; they never live in the SQLite store (activities run where neither
is visible, see :mod:`zambeze_mesh.execution.sandbox`).

The CA key may be encrypted at rest with a passphrase (PKCS#8 with the best
encryption ``cryptography`` offers); :func:`unlock_ca_key` decrypts it in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from zambeze_mesh.errors import FailedPrecondition, InvalidInput
from zambeze_mesh.security.keys import PrivateKey, key_from_pem, write_private_file

KEYS_DIR = "keys"
AGENT_KEY = "agent.key"
CA_KEY = "ca.key"
#: Longest passphrase file read (a passphrase is a line, not a document).
MAX_PASSPHRASE_BYTES = 4096
_ENCRYPTED_HEADER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


def keys_dir(home_root: Path) -> Path:
    """The key directory of an agent home."""
    return home_root / KEYS_DIR


def _ensure_dir(home_root: Path) -> Path:
    d = keys_dir(home_root)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def write_agent_key(home_root: Path, key_pem: bytes) -> Path:
    """Store the agent key (mode 0600 in the 0700 key dir)."""
    path = _ensure_dir(home_root) / AGENT_KEY
    write_private_file(path, key_pem)
    return path


def write_ca_key(home_root: Path, ca_key_pem: bytes) -> Path:
    """Store the CA key PEM as given (plain or already encrypted)."""
    path = _ensure_dir(home_root) / CA_KEY
    write_private_file(path, ca_key_pem)
    return path


def read_agent_key(home_root: Path) -> bytes:
    """The agent key PEM; FailedPrecondition when the file is missing."""
    path = keys_dir(home_root) / AGENT_KEY
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FailedPrecondition(f"agent key file {path} is missing") from None


def read_ca_key(home_root: Path) -> bytes | None:
    """The CA key PEM (maybe encrypted), or None on an agent that does not hold it."""
    try:
        return (keys_dir(home_root) / CA_KEY).read_bytes()
    except FileNotFoundError:
        return None


def is_encrypted(pem: bytes) -> bool:
    """True when a PEM private key is encrypted."""
    return pem.lstrip().startswith(_ENCRYPTED_HEADER)


def encrypt_key_pem(key_pem: bytes, passphrase: bytes) -> bytes:
    """Re-encode a plain PEM key encrypted with ``passphrase``."""
    if not passphrase:
        raise InvalidInput("the CA passphrase is empty")
    key = key_from_pem(key_pem)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def unlock_ca_key(pem: bytes, passphrase: bytes | None) -> PrivateKey:
    """Load the CA key, decrypting it when it is encrypted.

    Raises FailedPrecondition when it is encrypted and no passphrase was given, and
    InvalidInput when the passphrase is wrong.
    """
    if not is_encrypted(pem):
        return key_from_pem(pem)
    if not passphrase:
        raise FailedPrecondition(
            "the CA key is encrypted: give --ca-passphrase-file (or $ZMESH_CA_PASSPHRASE_FILE)"
        )
    try:
        return key_from_pem(pem, passphrase)
    except InvalidInput:
        raise InvalidInput("wrong CA passphrase (the CA key does not decrypt)") from None


def read_passphrase(path: str | os.PathLike[str]) -> bytes:
    """A passphrase from the first line of a file (trailing newline dropped)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_PASSPHRASE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read passphrase file {p}: {exc.strerror}") from None
    if len(data) > MAX_PASSPHRASE_BYTES:
        raise InvalidInput(f"passphrase file {p} is longer than {MAX_PASSPHRASE_BYTES} bytes")
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise InvalidInput(f"passphrase file {p} is empty")
    return line


def passphrase_from(path: str | os.PathLike[str] | None) -> bytes | None:
    """The passphrase from ``path``, else from ``$ZMESH_CA_PASSPHRASE_FILE``, else None."""
    chosen = path or os.environ.get("ZMESH_CA_PASSPHRASE_FILE") or None
    return read_passphrase(chosen) if chosen else None
