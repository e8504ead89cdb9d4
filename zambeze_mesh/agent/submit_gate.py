"""Admission of submitted campaigns: per-identity limits, one preparation at a time.

Validating a big campaign, building its DAG and journaling it take seconds of CPU
for thousands of activities. The monitor does that work in a worker thread so that
the agent's event loop keeps answering (membership probes above all); this gate
makes sure that only one such preparation runs at a time (each extra thread would
take the GIL from the loop as well) and that one identity cannot queue an unbounded
amount of it: beyond ``limit`` activities waiting or being prepared for the same
identity, a Submit is answered RESOURCE_EXHAUSTED with a retry hint. A campaign is
always admitted when its identity has nothing else waiting, whatever its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from zambeze_mesh.errors import Overloaded

#: Seconds a refused client is told to wait, per campaign ahead of it.
RETRY_PER_CAMPAIGN_S = 0.5
#: Campaigns at least this big are kept out of full garbage collections once admitted.
BIG_CAMPAIGN = 2000


def settle(activities: int) -> None:
    """After a big campaign is admitted: keep its objects out of full collections.

    A campaign's activities, rows and DAG live until it ends and are freed by
    reference counting then (they hold no cycles). Left to the collector, every
    full collection walks all of them while holding the GIL: with 100,000 admitted
    activities that stops the event loop for most of a second, long enough for
    peers to suspect this agent. The young generations are collected first, so
    only long-lived objects are frozen."""
    if activities >= BIG_CAMPAIGN:
        gc.collect(1)
        gc.freeze()


class SubmitGate:
    """Bounds the campaigns waiting for preparation, per owner identity."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: dict[str, int] = {}  # owner -> activities waiting or in preparation
        self.waiting = 0  # campaigns waiting or in preparation, all owners
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def admit(self, owner: str, activities: int) -> AsyncIterator[None]:
        """Hold the preparation slot for a campaign of ``activities`` from ``owner``.

        Raises :class:`~zambeze_mesh.errors.Overloaded` at once when ``owner``
        already has ``limit`` activities waiting."""
        held = self.pending.get(owner, 0)
        if held and held + activities > self.limit:
            wait = max(1.0, RETRY_PER_CAMPAIGN_S * self.waiting)
            raise Overloaded(
                f"{held} activities of {owner or 'this caller'} are still being admitted"
                f" (limit {self.limit}); retry in {wait:.0f} s",
                retry_after_s=wait,
            )
        self.pending[owner] = held + activities
        self.waiting += 1
        try:
            async with self._lock:
                yield
        finally:
            self.waiting -= 1
            left = self.pending[owner] - activities
            if left:
                self.pending[owner] = left
            else:
                del self.pending[owner]
