"""Length-prefixed pickle frames between the worker pool and its workers.

A frame is an 8-byte big-endian length followed by a pickle of builtins (the
user's payloads inside are cloudpickle bytes, never unpickled by the pool).
"""

from __future__ import annotations

import pickle
import struct
from typing import IO, Any

HEADER = struct.Struct("!Q")


def encode(obj: Any) -> bytes:
    """One frame holding ``obj``."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def read_frame(stream: IO[bytes]) -> Any | None:
    """Read one frame from a blocking stream; None at end of input."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def write_frame(stream: IO[bytes], obj: Any) -> None:
    """Write one frame to a blocking stream and flush it."""
    stream.write(encode(obj))
    stream.flush()
