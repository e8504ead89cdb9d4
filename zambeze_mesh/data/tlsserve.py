"""Holder side of ``tls-stream``: a TLS data listener beside the gRPC server.

Each accepted connection is served on its own thread with blocking sockets (TLS
record work and ``pread`` release the GIL): the TLS handshake must present a
client certificate of the mesh CA (no certificate, or one of another CA, fails
the handshake); the certificate must name an agent of this mesh; then the request
(grant, file, range) is checked by the same ``resolve`` callable ``Fetch`` uses
(grant signature, identity, expiry, sandbox), under the same per-peer stream
limit; then frames are read with ``preadv`` into one reused buffer, given a
checksum (CRC-32C or CRC-32) and sent with one ``sendall`` each. A reader that takes nothing for
``idle_timeout_s`` loses the connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from cryptography import x509

from zambeze_mesh.data.sandbox import open_regular
from zambeze_mesh.data.tlswire import (
    CHECKS,
    ERROR_LEN,
    FRAME,
    MAGIC,
    RangeRequest,
    error_json,
    read_json,
    recv_exact,
    stripe_frames,
    tune_socket,
    write_json,
)
from zambeze_mesh.errors import (
    DataIntegrityError,
    InvalidInput,
    NotPermitted,
    ResourceExhausted,
    Unauthenticated,
    ZmeshError,
)
from zambeze_mesh.security.certcache import CertCache, default_cache

__all__ = ["MAX_CONNECTIONS", "DataListener", "FrameFault", "Target"]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 512
"""Connections (handshaking or serving) one listener holds at once; more are closed."""

FrameFault = Callable[[int, int, memoryview], None]
"""Test hook: ``(index in connection, offset, frame bytes)``; may alter the bytes
(after their crc32 was computed) or raise to drop the connection."""


class Target(Protocol):
    """A file a checked grant lets the caller read (``DataService.fetch_target``)."""

    @property
    def path(self) -> Path:
        """The file."""
        ...

    @property
    def size(self) -> int:
        """Its size in bytes."""
        ...

    @property
    def sha256(self) -> str:
        """Its hex sha256."""
        ...


Resolve = Callable[[str, bytes, str], Target]
"""``(caller identity URI, grant token, relpath) -> Target``; raises to refuse."""


class _PeerLimit:
    """Thread-safe count of the data connections each peer has open."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, peer: str, limit: int) -> Iterator[None]:
        with self._lock:
            n = self._open.get(peer, 0)
            if n >= limit:
                raise ResourceExhausted(f"{peer} already has {n} data streams open (limit {limit})")
            self._open[peer] = n + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._open[peer] - 1
                if left:
                    self._open[peer] = left
                else:
                    del self._open[peer]


class DataListener:
    """Serve ``tls-stream`` connections on ``host``: ``port``, or the first free port of
    ``port_range`` (inclusive), or an ephemeral one.

    ``mesh`` and ``ca_cert`` name the trusted mesh; ``resolve`` checks a grant.
    ``fault`` returns the current test hook (or None).
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        resolve: Resolve,
        *,
        mesh: str,
        ca_cert: x509.Certificate,
        host: str = "127.0.0.1",
        port: int = 0,
        port_range: tuple[int, int] | None = None,
        max_per_peer: int = 16,
        idle_timeout_s: float = 60.0,
        handshake_timeout_s: float = 10.0,
        fault: Callable[[], FrameFault | None] | None = None,
        cache: CertCache | None = None,
    ) -> None:
        self.context = context
        self.resolve = resolve
        self.mesh = mesh
        self.ca_cert = ca_cert
        self.host = host
        self.port = port
        self.port_range = port_range
        self.max_per_peer = max_per_peer
        self.idle_timeout_s = idle_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self._fault = fault
        self._cache = cache or default_cache
        self._limit = _PeerLimit()
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.refused = 0
        """Connections refused (handshake, identity or request), for tests and logs."""

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> int:
        """Bind and start accepting; returns the bound port."""
        candidates = [self.port]
        if not self.port and self.port_range is not None:
            lo, hi = self.port_range
            candidates = list(range(lo, hi + 1))
        last: OSError | None = None
        for port in candidates:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            try:
                sock = socket.create_server((self.host, port), family=family, backlog=64)
            except OSError as exc:
                last = exc
                continue
            self._sock = sock
            self.port = int(sock.getsockname()[1])
            break
        else:
            raise ResourceExhausted(f"no free data port on {self.host} in {candidates}: {last}")
        self._thread = threading.Thread(target=self._accept_loop, name="tls-data", daemon=True)
        self._thread.start()
        return self.port

    def close(self) -> None:
        """Stop accepting and drop every open connection."""
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                raw, _addr = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    raw.close()
                    return
                if len(self._conns) >= MAX_CONNECTIONS:  # handshakes included
                    self.refused += 1
                    raw.close()
                    continue
                self._conns.add(raw)
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    # -- one connection --------------------------------------------------------------

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(self.handshake_timeout_s)
            tune_socket(raw)
            try:
                conn = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self._refuse()
                log.info("tls-stream: handshake refused: %s", exc)
                return
            with conn:
                self._session(conn)
        except Exception as exc:  # one connection must never take the listener down
            log.info("tls-stream: connection ended: %s", exc)
        finally:
            with self._lock:
                self._conns.discard(raw)
            with contextlib.suppress(OSError):
                raw.close()

    def _refuse(self) -> None:
        with self._lock:
            self.refused += 1

    def _caller(self, conn: ssl.SSLSocket) -> str:
        der = conn.getpeercert(binary_form=True)
        if not der:
            raise Unauthenticated("tls-stream needs a client certificate")
        verified = self._cache.verify(der, self.ca_cert, mesh=self.mesh)
        if verified.identity.role != "agent":
            raise NotPermitted(f"{verified.identity.uri} may not fetch data (agents only)")
        return verified.identity.uri

    def _session(self, conn: ssl.SSLSocket) -> None:
        try:
            caller = self._caller(conn)
            magic = bytearray(len(MAGIC))
            recv_exact(conn, memoryview(magic))
            if bytes(magic) != MAGIC:
                raise InvalidInput("tls-stream: not a data request")
            req = RangeRequest.from_json(read_json(conn))
        except ZmeshError as exc:
            self._refuse()
            with contextlib.suppress(OSError):
                write_json(conn, error_json(exc))
            return
        try:
            with self._limit.hold(caller, self.max_per_peer):
                try:
                    target = self.resolve(caller, req.grant, req.relpath)
                    if req.end > target.size:
                        raise InvalidInput(
                            f"range end {req.end} is past the end ({target.size} bytes)"
                        )
                except ZmeshError as exc:
                    self._refuse()
                    write_json(conn, error_json(exc))
                    return
                answer = {"ok": True, "size": target.size, "sha256": target.sha256}
                write_json(conn, {**answer, "check": req.checks[0]})
                conn.settimeout(self.idle_timeout_s)
                self._send(conn, target, req)
        except ResourceExhausted as exc:
            self._refuse()
            write_json(conn, error_json(exc))

    def _send(self, conn: ssl.SSLSocket, target: Target, req: RangeRequest) -> None:
        frame = req.frame_size()
        hl = FRAME.size
        buf = bytearray(hl + frame)
        view = memoryview(buf)
        fault = self._fault() if self._fault is not None else None
        check = CHECKS[req.checks[0]]
        fd = open_regular(target.path)
        try:
            offsets = stripe_frames(req.offset, req.end, frame, req.stripe, req.stripes)
            for index, off in enumerate(offsets):
                n = min(frame, req.end - off)
                data = view[hl : hl + n]
                got = os.preadv(fd, [data], off)
                if got != n:
                    err = DataIntegrityError("file changed while it was being sent")
                    raw = json.dumps(error_json(err)).encode()
                    conn.sendall(FRAME.pack(len(raw), ERROR_LEN, 0) + raw)
                    return
                FRAME.pack_into(buf, 0, off, n, check(data))
                if fault is not None:
                    fault(index, off, data)
                conn.sendall(view[: hl + n])
        finally:
            os.close(fd)
