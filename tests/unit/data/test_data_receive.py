"""FileReceiver: atomic install, resume, integrity."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from zambeze_mesh.data.receive import (
    WRITE_PIECE,
    ChunkCorrupt,
    FileReceiver,
    already_present,
    chunk_digest,
    manifest_dest,
    verify_chunk_digest,
)
from zambeze_mesh.errors import (
    DataIntegrityError,
    FailedPrecondition,
    InvalidInput,
    Unavailable,
)

DATA = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(DATA).hexdigest()


def _feed(r: FileReceiver, data: bytes, start: int, end: int, step: int = 1000) -> None:
    for off in range(start, end, step):
        r.write(off, data[off : min(off + step, end)])


def test_receive_and_install(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "out.bin"
    r = FileReceiver(dest, len(DATA), SHA)
    assert r.part == tmp_path / "sub" / "out.bin.zpart"
    _feed(r, DATA, 0, len(DATA))
    assert not dest.exists()
    assert r.finish() == dest
    assert dest.read_bytes() == DATA
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.bin"]


def test_large_chunks_are_written_in_pieces(tmp_path: Path) -> None:
    """A frame bigger than WRITE_PIECE reaches the file as several writes of at most
    WRITE_PIECE bytes (large writes are slow into the page cache), from a reused
    buffer as tls-stream passes them, and installs the exact bytes."""
    data = os.urandom(3 * WRITE_PIECE + 777) + os.urandom(2 * WRITE_PIECE + 5)
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "big.bin"
    r = FileReceiver(dest, len(data), sha)
    sizes: list[int] = []
    assert r._file is not None
    real: BinaryIO = r._file

    class Recording:
        def write(self, b: memoryview) -> int:
            sizes.append(len(b))
            return real.write(b)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    r._file = Recording()  # type: ignore[assignment]
    buf = bytearray(4 * WRITE_PIECE)  # one frame buffer, reused like tlsrecv's
    first = 3 * WRITE_PIECE + 777
    for off, end in ((0, first), (first, len(data))):
        buf[: end - off] = data[off:end]
        r.write(off, memoryview(buf)[: end - off])
    assert sizes and max(sizes) <= WRITE_PIECE and sum(sizes) == len(data)
    assert len(sizes) == 4 + 3
    r._file = real
    assert r.finish() == dest
    assert dest.read_bytes() == data


def test_a_chunk_that_fails_midway_counts_for_nothing(tmp_path: Path) -> None:
    """A write error after some pieces of a chunk (disk full) leaves offset, sha256 and
    file where they were: the chunk can be written again and the file installs."""
    data = os.urandom(3 * WRITE_PIECE)
    dest = tmp_path / "f.bin"
    r = FileReceiver(dest, len(data), hashlib.sha256(data).hexdigest())
    r.write(0, data[:WRITE_PIECE])
    assert r._file is not None
    real: BinaryIO = r._file
    calls: list[int] = []

    class FullAfterOne:
        def write(self, b: memoryview) -> int:
            calls.append(len(b))
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real.write(b)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    r._file = FullAfterOne()  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space"):
        r.write(WRITE_PIECE, data[WRITE_PIECE:])
    r._file = real
    assert r.offset == WRITE_PIECE
    r.write(WRITE_PIECE, data[WRITE_PIECE:])
    assert r.finish() == dest
    assert dest.read_bytes() == data


def test_empty_file(tmp_path: Path) -> None:
    r = FileReceiver(tmp_path / "e", 0, hashlib.sha256(b"").hexdigest())
    r.finish()
    assert (tmp_path / "e").read_bytes() == b""


def test_mismatch_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"previous version")
    r = FileReceiver(dest, len(DATA), SHA)
    bad = bytearray(DATA)
    bad[5000] ^= 0xFF
    _feed(r, bytes(bad), 0, len(DATA))
    with pytest.raises(DataIntegrityError, match="sha256 mismatch"):
        r.finish()
    assert dest.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_short_and_overlong(tmp_path: Path) -> None:
    r = FileReceiver(tmp_path / "o", len(DATA), SHA)
    _feed(r, DATA, 0, 5000)
    with pytest.raises(DataIntegrityError, match="expected"):
        r.finish()
    assert list(tmp_path.iterdir()) == []
    r = FileReceiver(tmp_path / "o", 10, SHA)
    with pytest.raises(DataIntegrityError, match="more than"):
        r.write(0, b"x" * 11)
    r.abort()


def test_out_of_order_refused(tmp_path: Path) -> None:
    r = FileReceiver(tmp_path / "o", len(DATA), SHA)
    r.write(0, DATA[:100])
    with pytest.raises(InvalidInput, match="expected offset 100, got 200"):
        r.write(200, DATA[200:300])
    with pytest.raises(InvalidInput, match="out-of-order"):
        r.write(0, DATA[:100])
    assert r.offset == 100
    r.close()


def test_chunk_digest_detects_corruption(tmp_path: Path) -> None:
    r = FileReceiver(tmp_path / "o", len(DATA), SHA)
    chunk = DATA[:1000]
    for alg in ("crc32", "sha256"):
        dig = chunk_digest(chunk, alg)
        assert verify_chunk_digest(chunk, dig)
        assert not verify_chunk_digest(b"X" + chunk[1:], dig)
        with pytest.raises(ChunkCorrupt):
            r.write(0, b"X" + chunk[1:], dig)
        assert r.offset == 0
    assert verify_chunk_digest(chunk, hashlib.sha256(chunk).hexdigest())
    with pytest.raises(InvalidInput):
        verify_chunk_digest(chunk, "md5:00")
    r.write(0, chunk, chunk_digest(chunk))
    assert r.offset == 1000
    r.close()


def test_resume_across_receivers(tmp_path: Path) -> None:
    dest = tmp_path / "o"
    r = FileReceiver(dest, len(DATA), SHA, checkpoint_bytes=3000)
    _feed(r, DATA, 0, 7000)
    r.close()  # e.g. the process stops: a checkpoint is written
    meta = json.loads(r.sidecar.read_text())
    assert meta["verified"] == 7000
    r2 = FileReceiver(dest, len(DATA), SHA)
    assert r2.resume_offset() == 7000
    _feed(r2, DATA, 7000, len(DATA))
    r2.finish()
    assert dest.read_bytes() == DATA
    assert not r2.sidecar.exists() and not r2.part.exists()


def test_resume_after_crash_uses_last_checkpoint(tmp_path: Path) -> None:
    """Bytes beyond the last checkpoint are distrusted (not fsynced) and re-fetched."""
    dest = tmp_path / "o"
    r = FileReceiver(dest, len(DATA), SHA, checkpoint_bytes=4000)
    _feed(r, DATA, 0, 9000)
    r._file.flush()  # type: ignore[union-attr]  # simulate a crash: no close()
    r._close_file()
    assert os.path.getsize(r.part) == 9000
    r2 = FileReceiver(dest, len(DATA), SHA, checkpoint_bytes=4000)
    assert r2.resume_offset() == 8000
    _feed(r2, DATA, 8000, len(DATA))
    r2.finish()
    assert dest.read_bytes() == DATA


def test_resume_rehashes_prefix(tmp_path: Path) -> None:
    """A corrupted prefix on disk is caught by the whole-file check after resume."""
    dest = tmp_path / "o"
    r = FileReceiver(dest, len(DATA), SHA)
    _feed(r, DATA, 0, 4000)
    r.close()
    with open(r.part, "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    r2 = FileReceiver(dest, len(DATA), SHA)
    _feed(r2, DATA, 4000, len(DATA))
    with pytest.raises(DataIntegrityError):
        r2.finish()
    assert not dest.exists() and not r2.part.exists()


def test_sidecar_for_other_object_ignored(tmp_path: Path) -> None:
    dest = tmp_path / "o"
    r = FileReceiver(dest, len(DATA), SHA)
    _feed(r, DATA, 0, 4000)
    r.close()
    other = hashlib.sha256(b"other").hexdigest()
    r2 = FileReceiver(dest, 5, other)
    assert r2.resume_offset() == 0
    r2.abort()


def test_restart(tmp_path: Path) -> None:
    r = FileReceiver(tmp_path / "o", len(DATA), SHA)
    _feed(r, DATA, 0, 3000)
    r.restart()
    assert r.offset == 0
    _feed(r, DATA, 0, len(DATA))
    r.finish()


def test_concurrent_receivers_refused(tmp_path: Path) -> None:
    r = FileReceiver(tmp_path / "o", len(DATA), SHA)
    with pytest.raises(Unavailable, match="in progress"):
        FileReceiver(tmp_path / "o", len(DATA), SHA)
    r.close()
    FileReceiver(tmp_path / "o", len(DATA), SHA).close()


def test_dest_is_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(FailedPrecondition):
        FileReceiver(tmp_path / "d", 1, SHA)


def test_bad_sha(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        FileReceiver(tmp_path / "o", 1, "nothex")


def test_tmp_dir(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "o"
    r = FileReceiver(dest, len(DATA), SHA, tmp_dir=tmp_path / "tmp")
    assert r.part.parent == tmp_path / "tmp"
    _feed(r, DATA, 0, len(DATA))
    r.finish()
    assert dest.read_bytes() == DATA
    assert list((tmp_path / "tmp").iterdir()) == []


def test_already_present(tmp_path: Path) -> None:
    f = tmp_path / "f"
    assert not already_present(f, len(DATA), SHA)
    f.write_bytes(DATA)
    assert already_present(f, len(DATA), SHA)
    assert not already_present(f, len(DATA) + 1, SHA)
    assert not already_present(f, len(DATA), hashlib.sha256(b"x").hexdigest())
    assert already_present(f, len(DATA), SHA, digest=lambda p: SHA)
    assert not already_present(tmp_path, 0, SHA)


@pytest.mark.parametrize(
    "rel", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/\x00", "x" * 300]
)
def test_manifest_dest_refuses(tmp_path: Path, rel: str) -> None:
    with pytest.raises(InvalidInput):
        manifest_dest(tmp_path, rel)


def test_manifest_dest_ok(tmp_path: Path) -> None:
    assert manifest_dest(tmp_path, "a/b/c.txt") == tmp_path / "a" / "b" / "c.txt"
