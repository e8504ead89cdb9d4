"""SQLite (WAL) persistence: identity, CA material, tokens, members, campaigns."""

from zambeze_mesh.store.db import MIGRATIONS, Store

__all__ = ["MIGRATIONS", "Store"]
