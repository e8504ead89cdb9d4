"""Live feeds of the web view: polled snapshots pushed as Server-Sent Events.

The ``Campaigns`` API has no streaming membership call, so :class:`PolledFeed`
polls ``ListMembers`` (every 0.5 s) or ``ListCampaigns`` while at least one page
listens, and wakes the listeners only when the snapshot changed. Campaign events
come from ``WatchBatches`` (see :mod:`zambeze_mesh.ui.app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from zambeze_mesh.campaign.wire import (
    FINAL_ACTIVITY_STATES,
    CampaignStatus,
    Members,
)
from zambeze_mesh.errors import ZmeshError
from zambeze_mesh.membership.status import MemberStatus

__all__ = ["MemberTracker", "PolledFeed", "campaign_summary", "sse"]

log = logging.getLogger(__name__)


def sse(data: Any, event: str = "message", id: int | None = None) -> bytes:
    """One Server-Sent Event with a JSON payload."""
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class MemberTracker:
    """Turns ``ListMembers`` answers into rows, remembering when each member last changed."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._seen: dict[str, tuple[str, int]] = {}
        self._changed: dict[str, float | None] = {}

    def rows(self, members: Members) -> dict[str, Any]:
        """The JSON view of ``members``; a member's ``changed`` is when its status or
        incarnation was seen to change (Unix seconds; None: not since first seen)."""
        now = self.clock()
        out = []
        for m in sorted(members.members, key=lambda m: m.name):
            key = (m.status, m.incarnation)
            if self._seen.get(m.name) != key:
                self._changed[m.name] = now if m.name in self._seen else None
                self._seen[m.name] = key
            out.append(
                {
                    "name": m.name,
                    "status": str(MemberStatus.parse(m.status)),
                    "address": m.address,
                    "labels": dict(m.labels),
                    "plugins": list(m.plugins),
                    "slots": m.slots,
                    "free": m.free_slots,
                    "used": max(0, m.slots - m.free_slots),
                    "incarnation": m.incarnation,
                    "self": m.is_self,
                    "roots": list(m.data_roots[1:]),  # exported roots (the first is @agentdir)
                    "changed": self._changed[m.name],
                }
            )
        return {"self": members.self_name, "mesh": members.mesh, "members": out}


def campaign_summary(c: CampaignStatus) -> dict[str, Any]:
    """One row of the Campaigns page."""
    done = sum(1 for a in c.activities if a.state in FINAL_ACTIVITY_STATES)
    failed = sum(1 for a in c.activities if a.state == "FAILED")
    return {
        "id": c.campaign_id,
        "name": c.name,
        "state": c.state,
        "monitor": c.monitor,
        "done": done,
        "failed": failed,
        "total": len(c.activities),
        "created_ms": c.created_unix_ms,
        "message": c.message,
        "last_seq": c.last_seq,
    }


class PolledFeed:
    """Polls ``fetch`` every ``interval`` seconds (longer if it is slow) while someone listens.

    ``listen()`` yields the current snapshot at once, then each changed one.
    Errors of ``fetch`` (agent down) are published as ``{"error": "..."}``.
    """

    def __init__(self, fetch: Callable[[], Awaitable[Any]], interval: float) -> None:
        self.fetch = fetch
        self.interval = interval
        self.version = 0
        self.snapshot: Any = None
        self._text = ""
        self._cond = asyncio.Condition()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll_once(self) -> None:
        try:
            snap = await self.fetch()
        except ZmeshError as exc:
            snap = {"error": str(exc)}
        text = json.dumps(snap, sort_keys=True, default=str)
        if text != self._text:
            self._text = text
            async with self._cond:
                self.snapshot = snap
                self.version += 1
                self._cond.notify_all()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._poll_once()
            except Exception:  # keep polling whatever one poll did
                log.exception("ui.poll_failed")
            # A slow answer (many big campaigns) stretches the period: the agent spends
            # at most about a third of its time answering this feed.
            await asyncio.sleep(max(self.interval, 2 * (loop.time() - started)))

    async def listen(self) -> AsyncGenerator[Any, None]:
        """Snapshots: the current one, then every change, until the caller stops."""
        self._listeners += 1
        if self._task is None or self._task.done():
            await self._poll_once()
            self._task = asyncio.create_task(self._run())
        try:
            seen = [0]
            while True:
                async with self._cond:
                    await self._cond.wait_for(lambda: self.version != seen[0])
                    seen[0], snap = self.version, self.snapshot
                yield snap
        finally:
            self._listeners -= 1
            if self._listeners == 0 and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None
