"""Wire format and TLS contexts of the ``tls-stream`` data channel.

``tls-stream`` moves bulk bytes over a plain TLS 1.3 socket beside gRPC (the
control channel), with the same mTLS identities. One connection carries one
byte range of one file:

* requester → holder: ``b"ZMTS"``, a 4-byte big-endian length and a JSON request
  ``{"grant": <hex token>, "relpath": str, "offset": int, "end": int,
  "frame": int, "stripe": i, "stripes": k}``;
* holder → requester: a 4-byte length and a JSON answer, ``{"ok": true, "size":
  int, "sha256": hex}`` or ``{"ok": false, "code": "<status name>", "message":
  str}``;
* then frames: a 16-byte header (offset u64, length u32, checksum u32) and
  ``length`` bytes. The checksum is CRC-32C (``crc32c``, hardware-accelerated
  through the ``crc32c`` package, ~5x faster than zlib here) when both ends have
  it, else zlib's CRC-32 (``crc32``): the request lists the requester's
  ``checks`` and the answer names the one the holder uses. With ``k`` stripes,
  stripe ``i`` carries the frames ``i, i+k, i+2k, ...`` of ``[offset, end)``
  (GridFTP-style block striping), so a receiver can hash the object in order
  while holding at most a few frames. A header whose length is
  :data:`ERROR_LEN` announces a JSON error of ``offset`` bytes instead of
  data (the holder gave up mid-stream).

Python 3.11 has no ``ssl.OP_ENABLE_KTLS`` (3.12+), and ``socket.sendfile`` on an
``SSLSocket`` falls back to ``send`` (userspace TLS must see the bytes), so the
holder reads each frame with ``readinto`` into one reused buffer and sends it with
one ``sendall``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zambeze_mesh import errors
from zambeze_mesh.errors import InvalidInput, Unavailable, ZmeshError

__all__ = [
    "CHECKS",
    "DEFAULT_FRAME",
    "ERROR_LEN",
    "FRAME",
    "MAGIC",
    "MAX_FRAME",
    "MAX_JSON",
    "MAX_STRIPES",
    "MIN_FRAME",
    "SOCKET_BUFFER",
    "Conn",
    "RangeRequest",
    "choose_check",
    "client_context",
    "error_from",
    "read_json",
    "recv_exact",
    "server_context",
    "stripe_frames",
    "tune_socket",
    "write_json",
]

MAGIC = b"ZMTS"
FRAME = struct.Struct(">QII")
"""Frame header: offset, length, crc32 of the bytes."""
DEFAULT_FRAME = 4 << 20
"""Default frame size (4 MiB): few headers, few Python iterations per byte."""
MAX_FRAME = 16 << 20
MIN_FRAME = 64 << 10
ERROR_LEN = 0xFFFFFFFF
MAX_JSON = 64 << 10
MAX_STRIPES = 16
SOCKET_BUFFER = 4 << 20
"""SO_SNDBUF / SO_RCVBUF asked for on data sockets (the kernel may cap it)."""
_LEN = struct.Struct(">I")

Checksum = Callable[[memoryview], int]
CHECKS: dict[str, Checksum] = {}
"""Frame checksums this process can compute, best first."""
try:
    import crc32c as _crc32c

    CHECKS["crc32c"] = _crc32c.crc32c
except ImportError:  # pragma: no cover - the package is a dependency
    pass
CHECKS["crc32"] = zlib.crc32


def choose_check(offered: object) -> str:
    """The first of the requester's ``offered`` checks this side has (``crc32`` if none)."""
    if isinstance(offered, list):
        for name in offered:
            if name in CHECKS:
                return str(name)
    return "crc32"


_ERRORS: dict[str, type[ZmeshError]] = {
    cls.code_name: cls
    for cls in (
        errors.InvalidInput,
        errors.NotPermitted,
        errors.Unauthenticated,
        errors.NotFound,
        errors.FailedPrecondition,
        errors.ResourceExhausted,
        errors.Unavailable,
        errors.DataIntegrityError,
    )
}


class Conn(Protocol):
    """What the wire helpers need of a connection (``SSLSocket`` or ``TLSConn``)."""

    def recv_into(self, view: memoryview) -> int:
        """Read into ``view``; 0 at the end of stream."""
        ...

    def sendall(self, data: bytes) -> None:
        """Send all of ``data``."""
        ...


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """What one data connection asks for: a grant, a file and a (striped) byte range."""

    grant: bytes
    relpath: str
    offset: int
    end: int
    frame: int = DEFAULT_FRAME
    stripe: int = 0
    stripes: int = 1
    checks: tuple[str, ...] = ("crc32",)

    def to_json(self) -> dict[str, Any]:
        """The JSON body sent after the magic."""
        return {
            "grant": self.grant.hex(),
            "relpath": self.relpath,
            "offset": self.offset,
            "end": self.end,
            "frame": self.frame,
            "stripe": self.stripe,
            "stripes": self.stripes,
            "checks": list(self.checks),
        }

    @classmethod
    def from_json(cls, raw: Any) -> RangeRequest:
        """Parse and bound-check a request; raises :class:`InvalidInput`."""
        if not isinstance(raw, dict):
            raise InvalidInput("tls-stream: the request must be a JSON object")
        try:
            req = cls(
                grant=bytes.fromhex(str(raw["grant"])),
                relpath=str(raw.get("relpath", "")),
                offset=int(raw["offset"]),
                end=int(raw["end"]),
                frame=int(raw.get("frame", DEFAULT_FRAME)),
                stripe=int(raw.get("stripe", 0)),
                stripes=int(raw.get("stripes", 1)),
                checks=(choose_check(raw.get("checks")),),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"tls-stream: bad request: {exc}") from None
        if not 0 <= req.offset <= req.end < 2**63:
            raise InvalidInput(f"tls-stream: bad range [{req.offset}, {req.end})")
        if not 1 <= req.stripes <= MAX_STRIPES or not 0 <= req.stripe < req.stripes:
            raise InvalidInput(f"tls-stream: bad stripe {req.stripe} of {req.stripes}")
        return req

    def frame_size(self) -> int:
        """The frame size to use, clamped to [64 KiB, 16 MiB]."""
        return max(MIN_FRAME, min(MAX_FRAME, self.frame))


def stripe_frames(offset: int, end: int, frame: int, stripe: int, stripes: int) -> Iterator[int]:
    """Offsets of the frames stripe ``stripe`` of ``stripes`` carries in ``[offset, end)``."""
    pos = offset + stripe * frame
    step = stripes * frame
    while pos < end:
        yield pos
        pos += step


def recv_exact(sock: Conn, view: memoryview) -> None:
    """Fill ``view`` from ``sock``; :class:`Unavailable` if the peer closes first."""
    got = 0
    n = len(view)
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise Unavailable("tls-stream: the connection closed mid-frame")
        got += k


def write_json(sock: Conn, obj: Any, prefix: bytes = b"") -> None:
    """Send ``prefix``, a 4-byte length and ``obj`` as JSON."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(prefix + _LEN.pack(len(body)) + body)


def read_json(sock: Conn) -> Any:
    """Read a 4-byte length and that much JSON (at most :data:`MAX_JSON` bytes)."""
    head = bytearray(_LEN.size)
    recv_exact(sock, memoryview(head))
    (n,) = _LEN.unpack(head)
    if n > MAX_JSON:
        raise InvalidInput(f"tls-stream: message of {n} bytes is too long")
    body = bytearray(n)
    recv_exact(sock, memoryview(body))
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidInput(f"tls-stream: bad JSON: {exc}") from None


def error_json(exc: BaseException) -> dict[str, Any]:
    """The JSON answer for a refusal."""
    code = exc.code_name if isinstance(exc, ZmeshError) else "INTERNAL"
    return {"ok": False, "code": code, "message": str(exc)}


def error_from(raw: Any) -> ZmeshError:
    """The :class:`ZmeshError` a holder's JSON refusal stands for."""
    if not isinstance(raw, dict):
        return Unavailable("tls-stream: malformed answer from the holder")
    cls = _ERRORS.get(str(raw.get("code", "")), ZmeshError)
    return cls(str(raw.get("message", "refused")))


def tune_socket(sock: socket.socket) -> None:
    """Large send/receive buffers and no Nagle delay on a data socket."""
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _load_chain(ctx: ssl.SSLContext, key_pem: bytes, cert_pem: bytes) -> None:
    # ssl only loads a key from a file: write it to a private temp dir, load, delete.
    with tempfile.TemporaryDirectory(prefix="zmesh-tls-") as d:
        os.chmod(d, 0o700)
        key = Path(d) / "key.pem"
        cert = Path(d) / "cert.pem"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        cert.write_bytes(cert_pem)
        ctx.load_cert_chain(str(cert), str(key))


def server_context(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.3 server context that requires a client certificate of the mesh CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_pem.decode())
    _load_chain(ctx, key_pem, cert_pem)
    return ctx


def client_context(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.3 client context presenting our certificate, trusting only the mesh CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=ca_pem.decode())
    _load_chain(ctx, key_pem, cert_pem)
    return ctx
