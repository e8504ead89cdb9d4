"""Catalog: lazy, cached digests and directory manifests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from zambeze_mesh.data.catalog import (
    Catalog,
    DigestKey,
    ManifestEntry,
    MemoryDigestStore,
    digest_of_manifest,
    sha256_file,
)
from zambeze_mesh.data.sandbox import Sandbox
from zambeze_mesh.errors import NotPermitted, ResourceExhausted


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    (tmp_path / "agent").mkdir()
    return Catalog(Sandbox(tmp_path / "agent", []))


def test_sha256_file_large(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) * 2 + 123)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == _sha(data)
    assert sha256_file(tmp_path / "f", buffer_size=7) == _sha(data)


def test_stat_file_and_dir(cat: Catalog) -> None:
    agent = cat.sandbox.agent_dir
    (agent / "x").write_bytes(b"hello")
    info = cat.stat("x")
    assert (info.path, info.size, info.sha256, info.is_dir) == ("x", 5, _sha(b"hello"), False)
    assert info.mtime_ns == os.stat(agent / "x").st_mtime_ns
    d = cat.stat("")
    assert d.is_dir and d.sha256 == ""


def test_digest_cached_and_recomputed_after_change(cat: Catalog) -> None:
    f = cat.sandbox.agent_dir / "x"
    f.write_bytes(b"one")
    assert cat.stat("x").sha256 == _sha(b"one")
    assert cat.stat("x").sha256 == _sha(b"one")
    assert cat.hashes_computed == 1
    f.write_bytes(b"two!")  # size changes
    assert cat.stat("x").sha256 == _sha(b"two!")
    assert cat.hashes_computed == 2
    st = os.stat(f)
    f.write_bytes(b"TWO!")  # same size: only the mtime tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cat.stat("x").sha256 == _sha(b"TWO!")
    assert cat.hashes_computed == 3


def test_digest_recomputed_after_replace_same_mtime(cat: Catalog) -> None:
    """A new inode (file replaced by rename) invalidates the cache even with equal mtime."""
    agent = cat.sandbox.agent_dir
    f = agent / "x"
    f.write_bytes(b"aaaa")
    st = os.stat(f)
    assert cat.sha256(f) == _sha(b"aaaa")
    tmp = agent / "x.new"
    tmp.write_bytes(b"bbbb")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    keep = agent / "x.keep"  # keep the old inode alive so it is not reused
    os.link(f, keep)
    os.replace(tmp, f)
    assert cat.sha256(f) == _sha(b"bbbb")


def test_custom_store_is_used(tmp_path: Path) -> None:
    class Store:
        def __init__(self) -> None:
            self.d: dict[DigestKey, str] = {}

        def get(self, key: DigestKey) -> str | None:
            return self.d.get(key)

        def put(self, key: DigestKey, sha256: str) -> None:
            self.d[key] = sha256

    store = Store()
    (tmp_path / "f").write_bytes(b"z")
    c = Catalog(Sandbox(tmp_path, []), store)
    c.stat("f")
    assert list(store.d.values()) == [_sha(b"z")]
    c2 = Catalog(Sandbox(tmp_path, []), store)  # a "restart" with the same store
    c2.stat("f")
    assert c2.hashes_computed == 0


def test_memory_store_bounded() -> None:
    s = MemoryDigestStore(max_entries=2)
    for i in range(3):
        s.put(DigestKey(str(i), 0, 0, 0), "h")
    assert len(s) == 2 and s.get(DigestKey("0", 0, 0, 0)) is None


def test_manifest(cat: Catalog, tmp_path: Path) -> None:
    agent = cat.sandbox.agent_dir
    d = agent / "ds"
    (d / "b" / "c").mkdir(parents=True)
    (d / "z.txt").write_bytes(b"z")
    (d / "a.txt").write_bytes(b"a")
    (d / "b" / "c" / "deep").write_bytes(b"deep")
    (d / "empty").mkdir()
    os.mkfifo(d / "fifo")
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    (d / "escape").symlink_to(outside)
    (d / "inlink").symlink_to(d / "a.txt")
    (d / "dirlink").symlink_to(d / "b")
    m = cat.manifest("ds")
    assert m == [
        ManifestEntry("a.txt", 1, _sha(b"a")),
        ManifestEntry("b/c/deep", 4, _sha(b"deep")),
        ManifestEntry("inlink", 1, _sha(b"a")),
        ManifestEntry("z.txt", 1, _sha(b"z")),
    ]
    assert digest_of_manifest(m) == digest_of_manifest(list(reversed(m)))
    changed = [*m[:-1], ManifestEntry("z.txt", 1, _sha(b"y"))]
    assert digest_of_manifest(changed) != digest_of_manifest(m)


def test_manifest_bounded(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for i in range(5):
        (tmp_path / "d" / str(i)).write_bytes(b"")
    c = Catalog(Sandbox(tmp_path, []), max_entries=4)
    with pytest.raises(ResourceExhausted):
        c.manifest("d")
    c.max_entries = 5
    assert len(c.manifest("d")) == 5


def test_manifest_of_file_and_refusals(cat: Catalog) -> None:
    agent = cat.sandbox.agent_dir
    (agent / "one").write_bytes(b"1")
    assert cat.manifest("one") == [ManifestEntry("one", 1, _sha(b"1"))]
    os.mkfifo(agent / "fifo")
    with pytest.raises(NotPermitted):
        cat.stat("fifo")


def test_memory_digest_store_is_safe_from_many_threads() -> None:
    """Digests are computed in ``to_thread`` workers: concurrent gets, puts and
    evictions must neither raise nor break the bound or the LRU bookkeeping."""
    import sys
    import threading

    store = MemoryDigestStore(max_entries=2)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def hammer(seed: int) -> None:
        start.wait()
        try:
            for i in range(60_000):
                key = DigestKey(f"/f{(i + seed) % 3}", 1, 1, 1)
                if i % 3:
                    got = store.get(key)
                    assert got is None or got == f"{key.path}-sha"
                else:
                    store.put(key, f"{key.path}-sha")
        except BaseException as exc:
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert len(store) <= 2
