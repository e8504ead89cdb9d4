"""Store writes off the event loop, in order, on one thread of their own.

A SQLite commit can wait (a checkpoint, a slow disk, another process holding the
write lock for up to the store's busy timeout). Code driven by the event loop, such as
the membership protocol's step, queues its writes on a :class:`StoreWriter` instead of
committing on the loop: they run one at a time on the writer's thread, in the order
they were queued, while the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from zambeze_mesh.settings.logs import log_event

log = logging.getLogger("zambeze_mesh.store")

T = TypeVar("T")


class StoreWriter:
    """Runs store writes in submission order on a single thread (``name`` names it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    def write(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; a failure is logged (``store.write_failed``), not raised.

        After :meth:`close`, the write runs at once on the caller's thread.
        """
        fut = self._submit(fn, *args)

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is not None:
                log_event(
                    log,
                    "store.write_failed",
                    level=logging.WARNING,
                    writer=self.name,
                    what=what,
                    reason=str(exc),
                )

        fut.add_done_callback(done)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Queue ``fn(*args)`` after every write queued so far; its result (or error)."""
        return await asyncio.wrap_future(self._submit(fn, *args))

    async def flush(self) -> None:
        """Wait until every write queued so far has run."""
        await self.run(lambda: None)

    async def close(self) -> None:
        """Run what is queued, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._pool.shutdown, wait=True)

    def _submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if not self._closed:
            return self._pool.submit(fn, *args)
        fut: Future[T] = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:
            fut.set_exception(exc)
        return fut
