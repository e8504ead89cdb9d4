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
    from zambeze_mesh.agent.agent import Agent

__all__ = [
    "Piece",
    "browse_admins",
    "check_browse",
    "list_data",
    "read_data",
    "split_data_uri",
    "stat_data",
]


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes of a file read by :func:`read_data`: ``data`` starts at ``offset``."""

    offset: int
    data: bytes
    file_size: int


def browse_admins(agent: Agent) -> Collection[str]:
    """Identities (``spiffe://`` URIs, agent setting ``admins``) that may browse besides
    the local Unix-socket user."""
    return tuple(agent.config.admins)


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


async def list_data(agent: Agent, uri: str, limit: int = 0) -> tuple[str, list[ObjectInfo], bool]:
    """(holder, entries, truncated) of ``uri`` (a directory's entries, or the file itself)."""
    holder, path = split_data_uri(uri)
    if holder == agent.name:
        entries, truncated = await asyncio.to_thread(agent.datasvc.list, path, limit)
        return holder, entries, truncated
    entries, truncated = await DataClient(agent).list(holder, path, limit)
    return holder, entries, truncated


async def stat_data(agent: Agent, uri: str) -> ObjectInfo:
    """Size, mtime and (for files) sha256 of ``uri``."""
    holder, path = split_data_uri(uri)
    if holder == agent.name:
        return await asyncio.to_thread(agent.datasvc.stat, path)
    return await DataClient(agent).stat(holder, path)


def _bounds(offset: int, size: int, file_size: int) -> int:
    """The end (exclusive) of the range asked for; refuses an offset past the end."""
    if offset > file_size:
        raise InvalidInput(f"offset {offset} is past the end of the file ({file_size} bytes)")
    return file_size if size == 0 else min(file_size, offset + size)


async def read_data(agent: Agent, uri: str, offset: int = 0, size: int = 0) -> AsyncIterator[Piece]:
    """The bytes of file ``uri`` in ``[offset, offset + size)`` (``size`` 0: to the end)."""
    if offset < 0 or size < 0:
        raise InvalidInput("offset and size must not be negative")
    holder, path = split_data_uri(uri)
    svc = agent.datasvc
    chunk = min(DEFAULT_CHUNK, svc.max_chunk)
    if holder == agent.name:
        async for piece in _read_local(agent, path, offset, size, chunk):
            yield piece
    else:
        async for piece in _read_remote(agent, holder, path, offset, size, chunk):
            yield piece


async def _read_local(
    agent: Agent, path: str, offset: int, size: int, chunk: int
) -> AsyncIterator[Piece]:
    real = await asyncio.to_thread(agent.datasvc.sandbox.resolve, path)
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
    agent: Agent, holder: str, path: str, offset: int, size: int, chunk: int
) -> AsyncIterator[Piece]:
    client = DataClient(agent)
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
