"""Sync-over-async bridge: one private event loop in a daemon thread.

Every gRPC ``aio`` object of the client lives on this loop. The sync API submits
coroutines to it and blocks the *calling thread* (never the loop), so it works in
a plain script and inside an already-running loop such as Jupyter's. The async
API runs the same coroutines on the bridge loop and awaits them from the
caller's own loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

__all__ = ["BridgeLoop", "bridge"]

T = TypeVar("T")

_DONE = object()


class BridgeLoop:
    """An event loop running forever in a daemon thread, started on first use."""

    def __init__(self, name: str = "zmesh-client-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge loop (started if needed)."""
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def in_loop(self) -> bool:
        """True when called from the bridge loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the bridge loop; a thread-safe future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the bridge loop and block this thread for its result.

        Raises ``TimeoutError`` after ``timeout`` seconds (the coroutine is cancelled).
        Must not be called from the bridge loop itself (it would deadlock).
        """
        if self.in_loop():
            coro.close()
            raise RuntimeError(
                "blocking call made on the zambeze-mesh client loop; use the async API"
            )
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on the bridge loop, from any event loop."""
        if self.in_loop():
            return await coro
        fut = self.submit(coro)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()
            raise

    async def iterate(self, agen: AsyncIterator[T], maxsize: int = 1024) -> AsyncIterator[T]:
        """Iterate ``agen`` on the bridge loop and yield its items on the caller's loop."""
        if self.in_loop():
            async for item in agen:
                yield item
            return
        caller = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        window: asyncio.Semaphore | None = None  # created on the bridge loop

        def put(item: object) -> None:
            caller.call_soon_threadsafe(queue.put_nowait, item)

        async def pump() -> None:
            nonlocal window
            window = asyncio.Semaphore(maxsize)  # at most maxsize items in flight
            try:
                async for item in agen:
                    await window.acquire()
                    put(item)
                put(_DONE)
            except BaseException as exc:
                put(_Raise(exc))
                if not isinstance(exc, Exception):
                    raise
            finally:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()

        fut = self.submit(pump())
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Raise):
                    if isinstance(item.exc, asyncio.CancelledError):
                        return
                    raise item.exc
                if window is not None:
                    self.loop.call_soon_threadsafe(window.release)
                yield item
        finally:
            fut.cancel()


class _Raise:
    """An exception carried from the pump to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


bridge = BridgeLoop()
"""The process-wide bridge loop used by the client and the campaigns."""
