"""ServedStreams: served streams end with UNAVAILABLE when the agent stops, between items."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from zambeze_mesh.agent.servicers.streams import ServedStreams
from zambeze_mesh.errors import Unavailable


class Source:
    """An endless stream of items, one per ``put``; records whether it was closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.closed = False

    async def items(self) -> AsyncIterator[int]:
        try:
            while True:
                yield await self.queue.get()
        finally:
            self.closed = True


async def _collect(
    streams: ServedStreams, source: Source, got: list[int], two: asyncio.Event | None = None
) -> None:
    async for item in streams.serve(source.items()):
        got.append(item)
        if two is not None and len(got) == 2:
            two.set()


def test_a_waiting_stream_ends_unavailable_at_stop_and_its_source_is_closed() -> None:
    async def go() -> None:
        streams, source, got, two = ServedStreams(), Source(), [], asyncio.Event()
        task = asyncio.create_task(_collect(streams, source, got, two))
        source.queue.put_nowait(1)
        source.queue.put_nowait(2)
        await asyncio.wait_for(two.wait(), 5)
        await asyncio.sleep(0.01)  # the stream waits for its next item
        streams.stop()
        with pytest.raises(Unavailable, match="stopping"):
            await asyncio.wait_for(task, 5)
        assert got == [1, 2]
        assert source.closed

    asyncio.run(go())


def test_an_item_being_handled_is_handled_whole_then_the_stream_ends() -> None:
    async def go() -> None:
        streams, source = ServedStreams(), Source()
        handled: list[int] = []
        release = asyncio.Event()

        async def handler() -> None:
            async for item in streams.serve(source.items()):
                await release.wait()  # e.g. a report being journaled
                handled.append(item)

        task = asyncio.create_task(handler())
        source.queue.put_nowait(7)
        source.queue.put_nowait(8)  # waiting, never taken
        await asyncio.sleep(0.01)
        streams.stop()
        await asyncio.sleep(0.01)
        assert not task.done()  # not interrupted mid-item
        release.set()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(task, 5)
        assert handled == [7]

    asyncio.run(go())


def test_new_streams_are_refused_once_stopping() -> None:
    async def go() -> None:
        streams, source = ServedStreams(), Source()
        streams.stop()
        assert streams.stopping
        with pytest.raises(Unavailable):
            await _collect(streams, source, [])

    asyncio.run(go())


def test_a_stream_that_ends_by_itself_ends_normally() -> None:
    async def go() -> None:
        streams = ServedStreams()

        async def three() -> AsyncIterator[int]:
            for i in range(3):
                yield i

        assert [i async for i in streams.serve(three())] == [0, 1, 2]
        streams.stop()  # nothing left open: no effect on finished streams

    asyncio.run(go())


def test_a_timeout_inside_the_source_is_not_mistaken_for_a_stop() -> None:
    async def go() -> None:
        streams = ServedStreams()

        async def slow() -> AsyncIterator[int]:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
            yield 1

        with pytest.raises(TimeoutError):
            async for _ in streams.serve(slow()):
                pass

    asyncio.run(go())
