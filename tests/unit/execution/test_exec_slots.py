"""Slots: a counting semaphore that never hands out more than n."""

from __future__ import annotations

import asyncio
import random

import pytest

from zambeze_mesh.execution import Slots


def test_try_acquire_and_release() -> None:
    s = Slots(2)
    assert (s.free, s.used) == (2, 0)
    assert s.try_acquire() and s.try_acquire()
    assert not s.try_acquire()
    assert (s.free, s.used) == (0, 2)
    s.release()
    assert s.free == 1
    s.release()
    with pytest.raises(RuntimeError):
        s.release()
    assert Slots(0).try_acquire() is False


async def test_never_exceeds_n_under_concurrency() -> None:
    s = Slots(3)
    rng = random.Random(7)
    running = 0
    peak = 0

    async def worker() -> None:
        nonlocal running, peak
        for _ in range(5):
            if not s.try_acquire():
                await s.acquire()
            running += 1
            peak = max(peak, running)
            assert s.used <= 3 and s.free >= 0
            await asyncio.sleep(rng.random() * 0.002)
            running -= 1
            s.release()

    await asyncio.gather(*(worker() for _ in range(20)))
    assert peak == 3
    assert (s.used, s.free) == (0, 3)


async def test_waiters_served_in_order_and_cancel_is_safe() -> None:
    s = Slots(1)
    await s.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await s.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert not s.try_acquire()  # queued waiters come first
    s.release()
    await asyncio.sleep(0)
    assert order == [0]
    s.release()
    await asyncio.sleep(0)
    assert order == [0, 2]
    s.release()
    assert (s.used, s.free) == (0, 1)
    await asyncio.gather(*tasks, return_exceptions=True)
