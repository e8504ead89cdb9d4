"""``settle_tasks``: what a stopped agent's process lets end before its loop closes."""

from __future__ import annotations

import asyncio

from zambeze_mesh.agent.settle import settle_tasks


async def test_waits_for_tasks_that_end_and_counts_those_that_do_not() -> None:
    ended: list[str] = []

    async def soon() -> None:
        await asyncio.sleep(0.05)
        ended.append("soon")

    quick = asyncio.create_task(soon())
    stuck = asyncio.create_task(asyncio.Event().wait())
    try:
        assert await settle_tasks(0.5) == 1
        assert quick.done() and ended == ["soon"]
        assert not stuck.done()  # left to asyncio.run, as before
    finally:
        stuck.cancel()


async def test_nothing_pending_returns_at_once() -> None:
    assert await settle_tasks(30) == 0
