"""The objects an agent holds: stat, sha256 (cached) and directory manifests.

Digests are computed lazily and cached by ``(path, size, mtime_ns, inode)``, so a
modified file is re-hashed and an unchanged one never is. The cache sits behind
the small :class:`DigestStore` protocol; :class:`MemoryDigestStore` is the
default and the store layer can supply a SQLite-backed one.

All methods block (hashing reads whole files); async callers should run them in
a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from zambeze_mesh.data.sandbox import Sandbox
from zambeze_mesh.errors import NotPermitted, ResourceExhausted

__all__ = [
    "HASH_BUFFER",
    "MAX_MANIFEST_ENTRIES",
    "Catalog",
    "DigestKey",
    "DigestStore",
    "ManifestEntry",
    "MemoryDigestStore",
    "ObjectInfo",
    "digest_of_manifest",
    "sha256_file",
]

log = logging.getLogger(__name__)

HASH_BUFFER = 1 << 20
"""Read size used when hashing files (1 MiB)."""
MAX_MANIFEST_ENTRIES = 100_000
"""Default bound on the number of files in one directory manifest."""


class DigestKey(NamedTuple):
    """What a cached digest is valid for: the same path, size, mtime and inode."""

    path: str
    size: int
    mtime_ns: int
    inode: int


class DigestStore(Protocol):
    """Where computed digests are kept (memory by default; SQLite via the store layer)."""

    def get(self, key: DigestKey) -> str | None:
        """The cached hex sha256 for ``key``, or None."""
        ...

    def put(self, key: DigestKey, sha256: str) -> None:
        """Remember the hex sha256 for ``key``."""
        ...


class MemoryDigestStore:
    """An in-memory LRU :class:`DigestStore` bounded to ``max_entries``.

    Safe to share between threads (digests are computed in ``asyncio.to_thread``
    workers): one lock guards the LRU order."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._max = max_entries
        self._d: OrderedDict[DigestKey, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: DigestKey) -> str | None:
        """The cached digest, refreshing its LRU position."""
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: DigestKey, sha256: str) -> None:
        """Store a digest, evicting the least recently used entry when full."""
        with self._lock:
            self._d[key] = sha256
            self._d.move_to_end(key)
            while len(self._d) > self._max:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Size, mtime and digest of a file or directory (``sha256`` is ``""`` for directories)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    is_dir: bool = False


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file of a directory object: POSIX relative path, size and hex sha256."""

    relpath: str
    size: int
    sha256: str


def sha256_file(path: Path, buffer_size: int = HASH_BUFFER) -> str:
    """Hex sha256 of a file, read with a ``buffer_size`` buffer."""
    h = hashlib.sha256()
    buf = bytearray(buffer_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def digest_of_manifest(entries: Iterable[ManifestEntry]) -> str:
    """A hex sha256 naming a whole manifest (order-independent: entries are sorted)."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.relpath):
        h.update(e.relpath.encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
        h.update(str(e.size).encode())
        h.update(b"\x00")
        h.update(e.sha256.encode())
        h.update(b"\n")
    return h.hexdigest()


class Catalog:
    """Stat, digest and list the objects an agent holds.

    ``stat``/``manifest`` take paths as clients name them and resolve them through
    the sandbox; ``info``/``sha256`` take already resolved paths.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        store: DigestStore | None = None,
        *,
        max_entries: int = MAX_MANIFEST_ENTRIES,
    ) -> None:
        self.sandbox = sandbox
        self.store: DigestStore = store if store is not None else MemoryDigestStore()
        self.max_entries = max_entries
        self.hashes_computed = 0
        """How many files were actually hashed (cache misses); handy for tests and metrics."""
        self._count_lock = threading.Lock()  # digests are computed in worker threads

    # -- single objects ------------------------------------------------------------

    def stat(self, path: str) -> ObjectInfo:
        """Stat ``path`` (as a client names it); files get their sha256."""
        real = self.sandbox.resolve(path)
        return self.info(real, shown=path)

    def info(self, real: Path, *, shown: str | None = None) -> ObjectInfo:
        """Stat a resolved path; files get their (cached) sha256."""
        st = os.stat(real)
        name = shown if shown is not None else str(real)
        if stat.S_ISDIR(st.st_mode):
            return ObjectInfo(name, 0, st.st_mtime_ns, "", is_dir=True)
        if not stat.S_ISREG(st.st_mode):
            raise NotPermitted(f"{name!r} is not a regular file or directory")
        digest, st = self._digest(real, st)
        return ObjectInfo(name, st.st_size, st.st_mtime_ns, digest)

    def sha256(self, real: Path) -> str:
        """The (cached) hex sha256 of a resolved regular file."""
        return self._digest(real, os.stat(real))[0]

    def _digest(self, real: Path, st: os.stat_result) -> tuple[str, os.stat_result]:
        for _ in range(3):
            key = DigestKey(str(real), st.st_size, st.st_mtime_ns, st.st_ino)
            cached = self.store.get(key)
            if cached is not None:
                return cached, st
            digest = sha256_file(real)
            with self._count_lock:
                self.hashes_computed += 1
            after = os.stat(real)
            if (after.st_size, after.st_mtime_ns, after.st_ino) == key[1:]:
                self.store.put(key, digest)
                return digest, st
            st = after  # changed while hashing: try again
        return digest, after

    # -- directories ---------------------------------------------------------------

    def manifest(self, path: str) -> list[ManifestEntry]:
        """Every regular file under directory ``path``, sorted by relative path.

        Symlinks to files inside the same root are listed (with the target's
        content); symlinks that leave the root, symlinks to directories (which could
        loop) and special files are skipped. More than ``max_entries`` files raise
        :class:`ResourceExhausted`.
        """
        real = self.sandbox.resolve(path)
        return self.manifest_of(real)

    def manifest_of(self, real: Path) -> list[ManifestEntry]:
        """Manifest of a resolved directory (see :meth:`manifest`)."""
        if not real.is_dir():
            st = os.stat(real)
            digest, st = self._digest(real, st)
            return [ManifestEntry(real.name, st.st_size, digest)]
        root = str(self.sandbox.root_of(real))
        files: list[tuple[str, Path]] = []
        self._walk(real, "", root, files)
        files.sort(key=lambda f: f[0])
        out: list[ManifestEntry] = []
        for rel, p in files:
            try:
                st = os.stat(p)
                digest, st = self._digest(p, st)
            except FileNotFoundError:
                log.debug("manifest: %s vanished while listing", p)
                continue
            out.append(ManifestEntry(rel, st.st_size, digest))
        return out

    def _walk(self, d: Path, prefix: str, root: str, out: list[tuple[str, Path]]) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = f"{prefix}{e.name}"
            if e.is_symlink():
                target = os.path.realpath(e.path)
                inside = target == root or target.startswith(root.rstrip("/") + "/")
                if inside and os.path.isfile(target) and stat.S_ISREG(os.stat(target).st_mode):
                    self._add(out, rel, Path(target))
                else:
                    log.debug("manifest: skipping symlink %s -> %s", e.path, target)
                continue
            if e.is_dir(follow_symlinks=False):
                self._walk(Path(e.path), rel + "/", root, out)
            elif e.is_file(follow_symlinks=False):
                self._add(out, rel, Path(e.path))
            else:
                log.debug("manifest: skipping special file %s", e.path)

    def _add(self, out: list[tuple[str, Path]], rel: str, p: Path) -> None:
        if len(out) >= self.max_entries:
            raise ResourceExhausted(f"directory has more than {self.max_entries} files")
        out.append((rel, p))
