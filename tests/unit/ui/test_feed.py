"""Membership rows of the web view: when each member last changed."""

from __future__ import annotations

import asyncio
import contextlib

from zambeze_mesh.campaign.wire import Member, Members
from zambeze_mesh.ui.feed import MemberTracker, PolledFeed


def members(**status: tuple[str, int]) -> Members:
    return Members(
        members=tuple(
            Member(name=n, address="127.0.0.1:1", status=s, incarnation=i, is_self=n == "a")
            for n, (s, i) in status.items()
        ),
        self_name="a",
        mesh="m",
    )


def test_last_change_follows_status_and_incarnation() -> None:
    now = [100.0]
    tracker = MemberTracker(clock=lambda: now[0])

    def changed() -> dict[str, float | None]:
        rows = tracker.rows(members(**view))["members"]
        return {r["name"]: r["changed"] for r in rows}

    view = {"a": ("ALIVE", 1), "b": ("ALIVE", 1)}
    assert changed() == {"a": None, "b": None}  # first sight: no change seen yet
    now[0] = 105.0
    view = {"a": ("ALIVE", 1), "b": ("DEAD", 1)}
    assert changed() == {"a": None, "b": 105.0}
    now[0] = 107.0
    view = {"a": ("ALIVE", 2), "b": ("DEAD", 1), "c": ("ALIVE", 1)}
    assert changed() == {"a": 107.0, "b": 105.0, "c": None}
    rows = tracker.rows(members(**view))["members"]
    assert [r["status"] for r in rows] == ["alive", "dead", "alive"]


async def test_polled_feed_pushes_only_changes_and_stops_without_listeners() -> None:
    calls = []
    values = iter([1, 1, 1, 2, 2, 3] + [3] * 1000)

    async def fetch() -> dict[str, int]:
        calls.append(1)
        return {"v": next(values)}

    feed = PolledFeed(fetch, interval=0.01)
    seen = []
    async with contextlib.aclosing(feed.listen()) as snaps:
        async for snap in snaps:
            seen.append(snap["v"])
            if snap["v"] == 3:
                break
    assert seen == [1, 2, 3]
    await asyncio.sleep(0.05)
    polled = len(calls)
    await asyncio.sleep(0.1)
    assert len(calls) == polled  # nobody listens: no more polling
