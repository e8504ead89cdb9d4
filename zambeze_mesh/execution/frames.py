"""Length-prefixed pickle frames between the worker pool and its workers.

A frame is an 8-byte big-endian length followed by a pickle of builtins (the
user's payloads inside are cloudpickle bytes, never unpickled by the pool).
Both sides use raw file descriptors: each frame is written with one
``write``/``writev`` call when the pipe has room, and read with as few ``read``
calls as it takes (one for a small frame).
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

HEADER = struct.Struct("!Q")

#: How much one ``read`` asks for: a pipe holds 64 KiB by default, and a bigger
#: buffer (256 KiB, as asyncio's pipe transports use) is above malloc's mmap
#: threshold, so every read would page-fault in a fresh mapping.
READ_CHUNK = 1 << 16


def encode(obj: Any) -> bytes:
    """One frame holding ``obj``."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


class FrameBuffer:
    """Bytes read so far from a stream of frames; :meth:`feed` returns the complete ones."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return the objects of the frames it completed, in order."""
        buf = self._buf
        if not buf:
            # Fast path: the chunk holds exactly one whole frame.
            if len(data) >= HEADER.size:
                (size,) = HEADER.unpack_from(data)
                if len(data) == HEADER.size + size:
                    return [pickle.loads(memoryview(data)[HEADER.size :])]
        buf += data
        frames = []
        while len(buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(buf)
            end = HEADER.size + size
            if len(buf) < end:
                break
            with memoryview(buf) as view, view[HEADER.size : end] as body:
                frames.append(pickle.loads(body))
            del buf[:end]
        return frames


class FrameReader:
    """Reads frames from a blocking file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = FrameBuffer()
        self._ready: list[Any] = []

    def read(self) -> Any | None:
        """The next frame's object; None at end of input (a partial frame is dropped)."""
        while not self._ready:
            data = os.read(self.fd, READ_CHUNK)
            if not data:
                return None
            self._ready = self._buf.feed(data)
        return self._ready.pop(0)


def write_frame(fd: int, obj: Any) -> None:
    """Write one frame to a blocking file descriptor (one ``writev`` unless the pipe is full)."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    parts = [memoryview(HEADER.pack(len(body))), memoryview(body)]
    while parts:
        n = os.writev(fd, parts)
        while parts and n >= len(parts[0]):
            n -= len(parts[0])
            parts.pop(0)
        if parts and n:
            parts[0] = parts[0][n:]
