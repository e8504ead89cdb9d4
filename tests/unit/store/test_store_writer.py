"""StoreWriter: writes run off the caller's thread, in the order they were queued."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from zambeze_mesh.store.writer import StoreWriter


def test_writes_run_in_order_on_one_other_thread() -> None:
    async def go() -> None:
        writer = StoreWriter("test-writer")
        done: list[tuple[int, str]] = []
        for i in range(200):
            writer.write("item", lambda i=i: done.append((i, threading.current_thread().name)))
        assert await writer.run(lambda: len(done)) == 200  # queued after the 200
        assert [i for i, _ in done] == list(range(200))
        threads = {t for _, t in done}
        assert len(threads) == 1 and threading.main_thread().name not in threads
        await writer.close()

    asyncio.run(go())


def test_a_failed_write_is_logged_and_the_next_ones_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom() -> None:
        raise OSError("disk I/O error")

    async def go() -> None:
        writer = StoreWriter("test-writer")
        after: list[int] = []
        writer.write("member", boom)
        writer.write("member", after.append, 1)
        await writer.flush()
        assert after == [1]
        with pytest.raises(OSError, match="disk I/O"):
            await writer.run(boom)  # an awaited write raises to its caller
        await writer.close()

    with caplog.at_level(logging.WARNING, logger="zambeze_mesh.store"):
        asyncio.run(go())
    assert any(r.getMessage() == "store.write_failed" for r in caplog.records), caplog.text


def test_close_runs_what_is_queued_and_later_writes_run_inline() -> None:
    async def go() -> None:
        writer = StoreWriter("test-writer")
        gate = threading.Event()
        done: list[str] = []
        writer.write("slow", lambda: (gate.wait(5), done.append("queued")))
        closing = asyncio.create_task(writer.close())
        await asyncio.sleep(0.01)
        gate.set()
        await closing
        assert done == ["queued"]
        writer.write("late", done.append, "late")  # after close: at once, here
        assert done == ["queued", "late"]
        await writer.close()  # idempotent

    asyncio.run(go())
