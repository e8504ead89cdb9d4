"""Client-facing data browsing: ``ListData``, ``StatData`` and ``ReadData`` of ``Campaigns``.

A client names data as ``NAME://path``. The agent called serves its own data
through its :class:`~zambeze_mesh.agent.datasvc.DataService` (the sandbox: exported
roots and ``@agentdir`` only, no ``..``, no symlink leaving a root) and forwards to
agent ``NAME`` for anything else, over its own agent identity with
:class:`~zambeze_mesh.data.client.DataClient`; the holder applies its own sandbox.

Who may browse is decided by :func:`check_browse`, a small separate rule: the
agent's Unix-socket client (only the agent's user can open the socket) and the
identities listed by :func:`browse_admins`; everyone else gets PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from zambeze_mesh.data.catalog import ObjectInfo
from zambeze_mesh.data.client import DataClient
from zambeze_mesh.data.sandbox import open_regular
from zambeze_mesh.data.stream import DEFAULT_CHUNK
from zambeze_mesh.data.uris import parse_uri
from zambeze_mesh.data.wire import info_from_pb
from zambeze_mesh.errors import DataIntegrityError, InvalidInput, NotPermitted
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.security.authz import Caller
from zambeze_mesh.v1 import data_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.datasvc import DataService
    from zambeze_mesh.data.peers import LocalAgent

__all__ = [
    "DataBrowser",
    "Piece",
    "check_browse",
    "split_data_uri",
]


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes of a file read by :func:`read_data`: ``data`` starts at ``offset``."""

    offset: int
    data: bytes
    file_size: int


def check_browse(caller: Caller, admins: Collection[str] = ()) -> None:
    """Raise :class:`NotPermitted` unless ``caller`` may browse data through this agent.

    Allowed: the local Unix-socket client (the agent's own user), and a client
    identity whose name or URI is in ``admins``. Agents and other clients are refused.
    """
    if caller.kind == "local":
        return
    ident = caller.identity
    if caller.kind == "client" and ident is not None:
        if ident.name in admins or ident.uri in admins:
            return
    raise NotPermitted(
        f"{caller.describe()} may not browse data: only the agent's local user "
        "(its Unix socket) and the agent's admins may"
    )


def split_data_uri(uri: str) -> tuple[str, str]:
    """``NAME://path`` as (agent name, path for that agent's Data service)."""
    if not uri:
        raise InvalidInput("uri is required: NAME://path (NAME://. is the agent's @agentdir)")
    parsed = parse_uri(uri)
    if parsed.scheme != "agent" or parsed.agent is None:
        raise InvalidInput(f"not an agent data URI: {uri!r}; expected NAME://path")
    return parsed.agent, parsed.path


def _bounds(offset: int, size: int, file_size: int) -> int:
    """The end (exclusive) of the range asked for; refuses an offset past the end."""
    if offset > file_size:
        raise InvalidInput(f"offset {offset} is past the end of the file ({file_size} bytes)")
    return file_size if size == 0 else min(file_size, offset + size)


class DataBrowser:
    """Browsing ``NAME://path`` for clients: this agent's own data through its data
    ``service``, anybody else's over the data fabric (``source``: what a data client
    needs of this agent). ``name`` is this agent's name."""

    def __init__(self, name: str, service: DataService, source: LocalAgent) -> None:
        self.name = name
        self.service = service
        self.source = source

    async def list_data(self, uri: str, limit: int = 0) -> tuple[str, list[ObjectInfo], bool]:
        """(holder, entries, truncated) of ``uri`` (a directory's entries, or the file itself)."""
        holder, path = split_data_uri(uri)
        if holder == self.name:
            entries, truncated = await asyncio.to_thread(self.service.list, path, limit)
            return holder, entries, truncated
        entries, truncated = await DataClient(self.source).list(holder, path, limit)
        return holder, entries, truncated

    async def stat_data(self, uri: str) -> ObjectInfo:
        """Size, mtime and (for files) sha256 of ``uri``."""
        holder, path = split_data_uri(uri)
        if holder == self.name:
            return await asyncio.to_thread(self.service.stat, path)
        return await DataClient(self.source).stat(holder, path)

    async def read_data(self, uri: str, offset: int = 0, size: int = 0) -> AsyncIterator[Piece]:
        """The bytes of file ``uri`` in ``[offset, offset + size)`` (``size`` 0: to the end)."""
        if offset < 0 or size < 0:
            raise InvalidInput("offset and size must not be negative")
        holder, path = split_data_uri(uri)
        svc = self.service
        chunk = min(DEFAULT_CHUNK, svc.max_chunk)
        if holder == self.name:
            async for piece in self._read_local(path, offset, size, chunk):
                yield piece
        else:
            async for piece in self._read_remote(holder, path, offset, size, chunk):
                yield piece

    async def _read_local(
        self, path: str, offset: int, size: int, chunk: int
    ) -> AsyncIterator[Piece]:
        real = await asyncio.to_thread(self.service.sandbox.resolve, path)
        if real.is_dir():
            raise InvalidInput(f"{path!r} is a directory: list it, read its files")
        fd = await asyncio.to_thread(open_regular, real)
        try:
            file_size = os.fstat(fd).st_size
            end = _bounds(offset, size, file_size)
            pos = offset
            if pos == end:
                yield Piece(pos, b"", file_size)
            while pos < end:
                data = await asyncio.to_thread(os.pread, fd, min(chunk, end - pos), pos)
                if not data:
                    break  # the file shrank while being read
                yield Piece(pos, data, file_size)
                pos += len(data)
        finally:
            os.close(fd)

    async def _read_remote(
        self, holder: str, path: str, offset: int, size: int, chunk: int
    ) -> AsyncIterator[Piece]:
        client = DataClient(self.source)
        address = await client.address(holder)
        offer = await client.offer(address, path)
        info = info_from_pb(offer.info)
        if info.is_dir:
            raise InvalidInput(f"{path!r} on {holder} is a directory: list it, read its files")
        end = _bounds(offset, size, info.size)
        if offset == end:
            yield Piece(offset, b"", info.size)
            return
        req = data_pb2.FetchRequest(grant=offer.grant, offset=offset, chunk_size=chunk)
        call = client.stub(address).Fetch(req)
        pos = offset
        try:
            async for msg in call:
                if msg.offset != pos:
                    raise DataIntegrityError(f"{holder} sent offset {msg.offset}, expected {pos}")
                data = msg.data[: end - pos]
                if data:
                    yield Piece(pos, data, info.size)
                    pos += len(data)
                if pos >= end or msg.last:
                    break
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()
