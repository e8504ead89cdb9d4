"""Long-lived streams an agent serves, ended promptly when the agent stops.

A contractor's ``ReportStream`` and a client's ``Watch``/``WatchBatches`` stay open
for as long as their peer wants. A gRPC server being stopped waits for such calls
until its grace period is over, so without help every stop with one open would take
the whole grace period. :class:`ServedStreams` ends them instead: once
:meth:`ServedStreams.stop` is called, a stream waiting for its next item ends with
UNAVAILABLE ("the agent is stopping"), and new ones are refused the same way. Peers
treat that as a broken stream: a contractor keeps its unacknowledged events in its
outbox and sends them again later, a client resumes its Watch from the last seq it saw.

Only the wait for the next item is interrupted, never the handling of one: a report
being journaled is journaled and acknowledged (or not) as a whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar

from zambeze_mesh.errors import Unavailable

T = TypeVar("T")

STOPPING = "the agent is stopping: try again later"


class ServedStreams:
    """The agent's open server streams, and the switch that ends them all."""

    def __init__(self) -> None:
        self._stopping = False
        self._waiting: set[asyncio.Timeout] = set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    def stop(self) -> None:
        """End every stream at its next wait (or now, if it is waiting); refuse new ones."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        for timeout in self._waiting:
            timeout.reschedule(loop.time())

    async def serve(self, items: AsyncIterable[T]) -> AsyncIterator[T]:
        """``items``, until they end or the agent stops (then :class:`Unavailable`)."""
        if self._stopping:
            raise Unavailable(STOPPING)
        it = aiter(items)
        try:
            while True:
                if self._stopping:  # stopped while the last item was handled
                    raise Unavailable(STOPPING)
                try:
                    async with asyncio.timeout(None) as timeout:
                        self._waiting.add(timeout)
                        try:
                            item = await anext(it)
                        finally:
                            self._waiting.discard(timeout)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if not self._stopping:
                        raise
                    raise Unavailable(STOPPING) from None
                yield item
        finally:
            close = getattr(it, "aclose", None)
            if close is not None:
                await close()
