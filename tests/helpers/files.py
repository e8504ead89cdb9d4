"""Small file helpers for data tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha(p: Path) -> str:
    """sha256 of a file's bytes, hex."""
    return hashlib.sha256(p.read_bytes()).hexdigest()


def write_random(p: Path, n: int) -> Path:
    """Write ``n`` random bytes to ``p`` (parents created); returns ``p``."""
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(os.urandom(n))
    return p
