"""The Data page's HTTP routes: list a directory of an agent, download a file.

``GET /api/data/list?uri=NAME://path`` answers the entries (name, size, mtime,
directory or not, and each entry's own URI); ``GET /api/data/download?uri=...``
streams a file as an attachment. Both go through the ``Campaigns`` API
(``ListData``, ``StatData``, ``ReadData``) of the agent behind the client, which
serves its own data and forwards for the other agents of the mesh.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from zambeze_mesh.campaign.client import Client
from zambeze_mesh.data.catalog import ObjectInfo
from zambeze_mesh.errors import InvalidInput, ZmeshError

__all__ = ["data_routes", "entry_json"]

MAX_LIST = 10_000


def _holder(uri: str) -> str:
    return uri.split("://", 1)[0]


def entry_json(holder: str, info: ObjectInfo) -> dict[str, Any]:
    """One row of a listing: its name, URI, size, mtime (ms) and kind."""
    return {
        "name": posixpath.basename(info.path.rstrip("/")) or info.path,
        "uri": f"{holder}://{info.path}",
        "size": info.size,
        "mtime_ms": info.mtime_ns // 1_000_000,
        "is_dir": info.is_dir,
    }


def _disposition(uri: str) -> str:
    name = posixpath.basename(uri.split("://", 1)[-1].rstrip("/")) or "download"
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def data_routes(client: Client, error: Callable[[ZmeshError], Response]) -> list[Route]:
    """The routes of the Data page; ``error`` turns a refusal into a JSON response."""

    def uri_of(request: Request) -> str:
        uri = request.query_params.get("uri", "")
        if "://" not in uri:
            raise InvalidInput("uri=NAME://path is required")
        return uri

    async def listing(request: Request) -> Response:
        try:
            uri = uri_of(request)
            entries, truncated = await client.list_data(uri, MAX_LIST)
        except ZmeshError as exc:
            return error(exc)
        holder = _holder(uri)
        return JSONResponse(
            {
                "uri": uri,
                "agent": holder,
                "entries": [entry_json(holder, e) for e in entries],
                "truncated": truncated,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def download(request: Request) -> Response:
        try:
            uri = uri_of(request)
            info = await client.stat_data(uri)
            if info.is_dir:
                raise InvalidInput(f"{uri} is a directory: download its files")
            chunks = client.read_data(uri, 0, info.size)
            first = await anext(aiter(chunks), b"")  # a refusal still gets a JSON error
        except ZmeshError as exc:
            return error(exc)

        async def body() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": _disposition(uri),
                "Content-Length": str(info.size),
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return [Route("/api/data/list", listing), Route("/api/data/download", download)]
