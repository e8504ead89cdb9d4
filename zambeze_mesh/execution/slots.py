"""Execution slots: how many activities this agent runs at once."""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """A counting semaphore whose ``free`` count the agent gossips.

    ``try_acquire`` never waits; ``acquire`` waits its turn (first come, first
    served); ``release`` hands the slot straight to the oldest waiter. ``used``
    never exceeds ``total``.
    """

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError("slot count must be >= 0")
        self.total = n
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        """Slots not in use."""
        return self.total - self.used

    def try_acquire(self) -> bool:
        """Take a slot if one is free (and nobody is queued before us)."""
        if self.used < self.total and not self._waiters:
            self.used += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting for one if needed."""
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give a slot back (to the oldest waiter if any)."""
        if self.used <= 0:
            raise RuntimeError("Slots.release() without a matching acquire")
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot moves to the waiter; used unchanged
                return
        self.used -= 1

    def __repr__(self) -> str:
        return f"Slots(total={self.total}, used={self.used}, waiting={len(self._waiters)})"
