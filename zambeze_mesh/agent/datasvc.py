"""The data service of one agent: Sandbox + Catalog + GrantIssuer behind the ``Data`` RPCs.

:class:`DataService` holds the policy of serving and receiving data (what may be
offered, to whom, for how long; where pushed bytes may land) in library terms;
:mod:`zambeze_mesh.agent.servicers.data` only translates protobuf. Methods that
touch the disk block and are meant to run in a thread (``asyncio.to_thread``),
except :meth:`DataService.receive_push`, which is async.

The grant secret is 32 random bytes made at an agent's first start and kept in the
store (``meta`` table), so grants survive a restart of the holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zambeze_mesh.data.catalog import (
    Catalog,
    DigestKey,
    ManifestEntry,
    ObjectInfo,
    digest_of_manifest,
)
from zambeze_mesh.data.grants import GrantIssuer
from zambeze_mesh.data.methods import (
    GRPC_STREAM,
    RSYNC,
    TLS_STREAM,
    choose_method,
    normalize_methods,
)
from zambeze_mesh.data.receive import FileReceiver
from zambeze_mesh.data.sandbox import Sandbox, check_path_text
from zambeze_mesh.data.stream import DEFAULT_CHUNK, MAX_CHUNK
from zambeze_mesh.errors import (
    DataIntegrityError,
    InvalidInput,
    NotPermitted,
    ResourceExhausted,
)
from zambeze_mesh.settings.config import DEFAULT_MAX_MESSAGE, AgentConfig, split_hostport
from zambeze_mesh.store import kv

if TYPE_CHECKING:
    from zambeze_mesh.store.db import Store

__all__ = [
    "DEFAULT_GRANT_TTL_S",
    "DEFAULT_LIST_LIMIT",
    "MAX_LIST_LIMIT",
    "DataService",
    "FetchTarget",
    "OfferResult",
    "build_data_service",
    "grant_secret",
]

DEFAULT_GRANT_TTL_S = 600
"""Lifetime of a grant issued by ``Offer`` (10 minutes)."""
DEFAULT_LIST_LIMIT = 1000
MAX_LIST_LIMIT = 10_000
DEFAULT_MAX_PUSH = 1 << 40
"""Default quota of pushed bytes (1 TiB); free disk space is checked too."""
MESSAGE_MARGIN = 64 << 10
"""Room left in a message for everything but a chunk's bytes."""
GRANT_SECRET_KEY = "data.grant_secret"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HIDDEN_SUFFIXES = (".zpart", ".zpart.json", ".zpart.json.tmp", ".zpart.install")


def grant_secret(store: Store) -> bytes:
    """This agent's grant secret: made (32 random bytes) on first use, then kept."""
    return bytes.fromhex(kv.get_or_create(store, GRANT_SECRET_KEY, lambda: secrets.token_hex(32)))


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class OfferResult:
    """What ``Offer`` answers: the object, the methods, the chosen one and the grant.

    For a directory ``info.size`` is the total of its files and ``info.sha256`` the
    digest of its manifest (:func:`~zambeze_mesh.data.catalog.digest_of_manifest`).
    """

    info: ObjectInfo
    methods: list[str]
    chosen: str
    token: bytes
    expires_ms: int
    manifest: list[ManifestEntry] = field(default_factory=list)
    method_params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """A file a checked grant lets the caller read now."""

    path: Path
    size: int
    sha256: str


class DataService:
    """Serve, describe and accept data for one agent.

    ``agent_dir`` is ``@agentdir``; ``roots`` the exported roots. ``methods`` are the
    transfer methods of the agent's config (``grpc-stream`` is always served; ``rsync``
    only when listed). ``rsync_endpoint`` (``host``, ``port``, ``user``) tells rsync
    requesters where to pull from. ``now_ms`` is the clock of grant expiry.
    """

    def __init__(
        self,
        agent_dir: Path,
        roots: Iterable[Path],
        secret: bytes,
        *,
        methods: Sequence[str] = (GRPC_STREAM,),
        grant_ttl_s: int = DEFAULT_GRANT_TTL_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
        max_push_bytes: int = DEFAULT_MAX_PUSH,
        address: str = "",
        rsync_endpoint: Mapping[str, str] | None = None,
        now_ms: Callable[[], int] = _now_ms,
    ) -> None:
        agent_dir.mkdir(parents=True, exist_ok=True)
        self.sandbox = Sandbox(agent_dir, roots)
        self.catalog = Catalog(self.sandbox)
        self.grants = GrantIssuer(secret)
        served = [GRPC_STREAM]
        if RSYNC in methods:
            served.append(RSYNC)
        self.methods = served
        self.grant_ttl_ms = grant_ttl_s * 1000
        self.max_chunk = max(4096, min(MAX_CHUNK, max_message_bytes - MESSAGE_MARGIN))
        #: Quota of pushed bytes: pushes in flight plus objects installed by Push (since
        #: this service started) that are still on disk; a push over it is refused.
        self.max_push_bytes = max_push_bytes
        self._pushing = 0
        self._pushed: dict[Path, int] = {}
        self.address = address
        self.rsync_endpoint = dict(rsync_endpoint or {})
        self.now_ms = now_ms
        self.data_port = 0

    def serve_tls_stream(self, port: int) -> None:
        """Offer ``tls-stream`` (first) from now on, on data port ``port``."""
        self.data_port = port
        if TLS_STREAM not in self.methods:
            self.methods.insert(0, TLS_STREAM)

    # -- Offer / Fetch ---------------------------------------------------------------

    def offer(self, caller_uri: str, path: str, requester_methods: Sequence[str]) -> OfferResult:
        """Describe ``path`` and grant ``caller_uri`` access to it (blocks: may hash)."""
        if not path:
            raise InvalidInput("offer: empty path")
        prefs = normalize_methods(requester_methods)
        real = self.sandbox.resolve(path)
        manifest: list[ManifestEntry] = []
        if real.is_dir():
            manifest = self.catalog.manifest_of(real)
            mtime = os.stat(real).st_mtime_ns
            total = sum(e.size for e in manifest)
            info = ObjectInfo(path, total, mtime, digest_of_manifest(manifest), is_dir=True)
        else:
            info = self.catalog.info(real, shown=path)
        chosen = choose_method(prefs, self.methods)
        expires = self.now_ms() + self.grant_ttl_ms
        token = self.grants.issue(caller_uri, str(real), expires)
        params: dict[str, str] = {}
        if chosen == RSYNC:  # only ever for the path the sandbox resolved
            params = {"host": split_hostport(self.address)[0]} if self.address else {}
            params.update(self.rsync_endpoint)
            params["path"] = str(real)
        elif chosen == TLS_STREAM:
            params = {"port": str(self.data_port)}
        return OfferResult(info, list(self.methods), chosen, token, expires, manifest, params)

    def fetch_target(self, caller_uri: str, token: bytes, relpath: str) -> FetchTarget:
        """Check a grant for ``caller_uri`` and re-resolve what it covers (blocks).

        ``relpath`` names a file inside a granted directory and must be empty for a
        granted file. Raises :class:`NotPermitted` for a bad, foreign or expired grant,
        for a path that no longer passes the sandbox and for ``relpath`` misuse.
        """
        granted = self.grants.check(token, caller_uri, self.now_ms())
        real = self.sandbox.resolve(granted)  # the export may have changed since the offer
        if not relpath:
            if real.is_dir():
                raise InvalidInput("the grant covers a directory: name one of its files in relpath")
            target = real
        else:
            if not real.is_dir():
                raise NotPermitted("the grant covers a single file; relpath must be empty")
            _check_relpath(relpath)
            target = self.sandbox.resolve(os.path.join(granted, relpath))
            if target.is_dir():
                raise InvalidInput(f"{relpath!r} is a directory; fetch the files of the manifest")
        st = os.stat(target)
        return FetchTarget(target, st.st_size, self.catalog.sha256(target))

    def chunk_size(self, requested: int) -> int:
        """The chunk size to send: the default for 0, capped by the message limit."""
        if requested <= 0:
            return min(DEFAULT_CHUNK, self.max_chunk)
        return min(requested, self.max_chunk)

    # -- Stat / List -----------------------------------------------------------------

    def stat(self, path: str) -> ObjectInfo:
        """Size, mtime and (for files) sha256 of ``path`` (blocks: may hash)."""
        if not path:
            raise InvalidInput("stat: empty path")
        return self.catalog.stat(path)

    def list(self, path: str, limit: int = 0) -> tuple[list[ObjectInfo], bool]:
        """Entries of directory ``path`` by name (at most ``limit``) and whether truncated.

        A file lists as itself (with its sha256); entries of a directory carry no
        digest. Symlinks leaving the root, special files and partial transfers are
        not listed.
        """
        if not path:
            raise InvalidInput("list: empty path")
        if limit < 0:
            raise InvalidInput("list: negative limit")
        limit = min(limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        real = self.sandbox.resolve(path)
        if not real.is_dir():
            return [self.catalog.info(real, shown=path)], False
        root = str(self.sandbox.root_of(real))
        names = sorted(os.listdir(real))
        out: list[ObjectInfo] = []
        for name in names:
            if name.endswith(_HIDDEN_SUFFIXES):
                continue
            st = _entry_stat(real / name, root)
            if st is None:
                continue
            if len(out) >= limit:
                return out, True
            shown = name if path in (".", "") else f"{path.rstrip('/')}/{name}"
            is_dir = stat.S_ISDIR(st.st_mode)
            out.append(ObjectInfo(shown, 0 if is_dir else st.st_size, st.st_mtime_ns, "", is_dir))
        return out, False

    # -- Push ------------------------------------------------------------------------

    def push_target(self, path: str, size: int, sha256: str) -> Path:
        """Where a pushed object of ``size`` bytes goes; checks bounds and free space."""
        if not path:
            raise InvalidInput("push: the first message must name the destination path")
        if not _HEX64.fullmatch(sha256.lower()):
            raise InvalidInput("push: the first message must carry the hex sha256 of the object")
        if size > self.max_push_bytes:
            raise ResourceExhausted(f"push of {size} bytes exceeds the {self.max_push_bytes} limit")
        dest = self.sandbox.resolve_for_write(path)
        free = shutil.disk_usage(dest.parent).free
        if size > free:
            raise ResourceExhausted(f"push of {size} bytes: only {free} bytes free at the target")
        return dest

    async def receive_push(
        self, path: str, size: int, sha256: str, data: AsyncIterator[bytes]
    ) -> ObjectInfo:
        """Write the pushed bytes to a part file, verify size and sha256, rename into place."""
        dest = await asyncio.to_thread(self.push_target, path, size, sha256)
        held = await asyncio.to_thread(self.pushed_bytes)
        if held + self._pushing + size > self.max_push_bytes:
            raise ResourceExhausted(
                f"push of {size} bytes: the push quota is {self.max_push_bytes} bytes and"
                f" {held + self._pushing} are held by earlier or running pushes"
            )
        self._pushing += size  # reserved in the loop: no other push sees it half-done
        try:
            info = await self._receive(dest, path, size, sha256, data)
        finally:
            self._pushing -= size
        self._pushed[dest] = info.size
        return info

    def pushed_bytes(self) -> int:
        """Bytes of objects installed by Push that are still on disk (forgets the rest)."""
        total = 0
        for dest in list(self._pushed):
            try:
                total += os.stat(dest).st_size
            except OSError:
                self._pushed.pop(dest, None)
        return total

    async def _receive(
        self, dest: Path, path: str, size: int, sha256: str, data: AsyncIterator[bytes]
    ) -> ObjectInfo:
        receiver = await asyncio.to_thread(FileReceiver, dest, size, sha256.lower())
        try:
            if receiver.offset:
                await asyncio.to_thread(receiver.restart)  # Push has no resume offset
            async for piece in data:
                if receiver.offset + len(piece) > size:
                    raise DataIntegrityError(f"push: more than the announced {size} bytes")
                if piece:
                    await asyncio.to_thread(receiver.write, receiver.offset, piece)
            await asyncio.to_thread(receiver.finish)
        except BaseException:
            with contextlib.suppress(Exception):
                receiver.abort()
            raise
        return await asyncio.to_thread(self._installed, dest, path, sha256.lower())

    def _installed(self, dest: Path, shown: str, sha256: str) -> ObjectInfo:
        st = os.stat(dest)
        real = os.path.realpath(dest)
        self.catalog.store.put(DigestKey(real, st.st_size, st.st_mtime_ns, st.st_ino), sha256)
        return ObjectInfo(shown, st.st_size, st.st_mtime_ns, sha256)


def _check_relpath(relpath: str) -> None:
    check_path_text(relpath)  # NUL, length, '..'
    if relpath.startswith("/"):
        raise NotPermitted(f"relpath must be relative to the granted directory: {relpath!r}")
    if any(p in ("", ".") for p in relpath.split("/")):
        raise InvalidInput(f"relpath must be a plain relative path: {relpath!r}")


def _entry_stat(p: Path, root: str) -> os.stat_result | None:
    try:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(p)
            if not (target == root or target.startswith(root.rstrip("/") + "/")):
                return None
            st = os.stat(target)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return st
    return None


def _rsync_endpoint(cfg: AgentConfig) -> dict[str, str]:
    """Where rsync requesters pull from: config values, else this process's user."""
    out = {"user": cfg.rsync_user or getpass.getuser()}
    if cfg.rsync_host:
        out["host"] = cfg.rsync_host
    if cfg.rsync_port:
        out["port"] = str(cfg.rsync_port)
    return out


def build_data_service(
    cfg: AgentConfig, *, home_root: Path, data_dir: Path, store: Store, address: str
) -> DataService:
    """The data service of an agent with this config (built once, by the agent)."""
    return DataService(
        data_dir,
        [home_root / r for r in cfg.exported_roots],
        grant_secret(store),
        methods=cfg.transfer_methods,
        max_message_bytes=cfg.max_message_bytes,
        max_push_bytes=cfg.max_push_bytes,
        address=address,
        rsync_endpoint=_rsync_endpoint(cfg),
    )
