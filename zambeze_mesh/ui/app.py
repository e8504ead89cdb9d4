"""The web view's HTTP routes (Starlette), built on the public ``Campaigns`` API only.

JSON:  ``GET /api/members``, ``GET /api/campaigns``, ``GET /api/campaigns/{id}``
(status, each activity's state and the DAG layout), ``POST
/api/campaigns/{id}/cancel``. Live (Server-Sent Events): ``/api/stream/members``,
``/api/stream/campaigns`` and ``/api/stream/campaigns/{id}`` (the campaign's
events; the browser's ``Last-Event-ID`` resumes after a reconnect). Static files
(plain HTML/CSS/JS, no build step) under ``/static``; the page itself at ``/``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from zambeze_mesh.campaign.client import Client
from zambeze_mesh.campaign.wire import CampaignStatus, Event
from zambeze_mesh.errors import InvalidInput, NotFound, NotPermitted, ZmeshError
from zambeze_mesh.ui.auth import TokenGuard
from zambeze_mesh.ui.data import data_routes
from zambeze_mesh.ui.feed import MemberTracker, PolledFeed, campaign_summary, sse
from zambeze_mesh.ui.layout import DEFAULT_PAGE_SIZE, layout_dag

__all__ = ["create_app"]

MEMBERS_INTERVAL = 0.5
CAMPAIGNS_INTERVAL = 1.0
KEEPALIVE = 15.0
_STATUS = {InvalidInput: 400, NotPermitted: 403, NotFound: 404}
#: The page loads and connects to this server only (no inline scripts, no other hosts).
_CSP = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
}


def _error(exc: ZmeshError) -> JSONResponse:
    code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 502)
    return JSONResponse({"error": str(exc)}, status_code=code)


def event_json(ev: Event) -> dict[str, Any]:
    """The JSON form of one campaign event (result bytes left out)."""
    return {
        "seq": ev.seq,
        "activity": ev.activity,
        "state": ev.state,
        "campaign_state": ev.campaign_state,
        "attempt": ev.attempt,
        "agent": ev.agent,
        "message": ev.message,
        "time_ms": ev.time_unix_ms,
        "detail": dict(ev.detail),
    }


def status_json(c: CampaignStatus, page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, Any]:
    """A campaign's status, activities and DAG layout."""
    names = [a.name for a in c.activities]
    lay = layout_dag(names, {a.name: a.depends_on for a in c.activities}, page_size)
    return {
        **campaign_summary(c),
        "activities": [
            {
                "name": a.name,
                "state": a.state,
                "attempt": a.attempt,
                "agent": a.agent,
                "message": a.message,
                "detail": dict(a.detail),
                "depends_on": list(a.depends_on),
                "page": lay.page_of.get(a.name, 0),
            }
            for a in c.activities
        ],
        "layout": lay.to_json(),
    }


async def _stream(source: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Interleave ``source`` with keep-alive comments so dead peers are noticed."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async with contextlib.aclosing(source):  # a gone page ends the Watch at once
                async for chunk in source:
                    await queue.put(chunk)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                if task.done() and queue.empty():
                    return
                yield b": keep-alive\n\n"
                continue
            if chunk is None:
                if task.done() and task.exception() is not None:
                    yield sse({"error": str(task.exception())}, "failure")
                return
            yield chunk
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _sse_response(source: AsyncGenerator[bytes, None]) -> StreamingResponse:
    return StreamingResponse(
        _stream(source),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def create_app(client: Client, token: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> Any:
    """The ASGI application of the web view, guarded by ``token``."""
    tracker = MemberTracker()

    async def fetch_members() -> dict[str, Any]:
        return tracker.rows(await client.list_members())

    async def fetch_campaigns() -> dict[str, Any]:
        return {"campaigns": [campaign_summary(c) for c in await client.list_campaigns()]}

    members_feed = PolledFeed(fetch_members, MEMBERS_INTERVAL)
    campaigns_feed = PolledFeed(fetch_campaigns, CAMPAIGNS_INTERVAL)
    static = resources.files("zambeze_mesh.ui") / "static"
    index_html = (static / "index.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(index_html, headers={"Cache-Control": "no-store", **_CSP})

    async def members(request: Request) -> Response:
        try:
            return JSONResponse(await fetch_members())
        except ZmeshError as exc:
            return _error(exc)

    async def campaigns(request: Request) -> Response:
        try:
            return JSONResponse(await fetch_campaigns())
        except ZmeshError as exc:
            return _error(exc)

    async def campaign(request: Request) -> Response:
        try:
            status = await client.get(request.path_params["cid"])
            return JSONResponse(status_json(status, page_size))
        except ZmeshError as exc:
            return _error(exc)

    async def cancel(request: Request) -> Response:
        try:
            status = await client.cancel(request.path_params["cid"])
        except ZmeshError as exc:
            return _error(exc)
        return JSONResponse(campaign_summary(status))

    async def stream_feed(feed: PolledFeed, event: str) -> AsyncGenerator[bytes, None]:
        async with contextlib.aclosing(feed.listen()) as snaps:
            async for snap in snaps:
                yield sse(snap, event)

    async def stream_members(request: Request) -> Response:
        return _sse_response(stream_feed(members_feed, "members"))

    async def stream_campaigns(request: Request) -> Response:
        return _sse_response(stream_feed(campaigns_feed, "campaigns"))

    async def stream_campaign(request: Request) -> Response:
        cid = request.path_params["cid"]
        raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        try:
            after = int(raw)
        except ValueError:
            return JSONResponse({"error": f"bad event id {raw!r}"}, status_code=400)

        async def events() -> AsyncGenerator[bytes, None]:
            batches = client.watch_batches(cid, after)
            try:
                async for batch in batches:
                    yield sse([event_json(e) for e in batch], "events", id=batch[-1].seq)
            finally:
                await batches.aclose()  # type: ignore[attr-defined]
            yield sse({"ended": True}, "end")

        return _sse_response(events())

    routes = [
        Route("/", index),
        Route("/api/members", members),
        Route("/api/campaigns", campaigns),
        Route("/api/campaigns/{cid}", campaign),
        Route("/api/campaigns/{cid}/cancel", cancel, methods=["POST"]),
        Route("/api/stream/members", stream_members),
        Route("/api/stream/campaigns", stream_campaigns),
        Route("/api/stream/campaigns/{cid}", stream_campaign),
        *data_routes(client, _error),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    return TokenGuard(Starlette(routes=routes), token)
