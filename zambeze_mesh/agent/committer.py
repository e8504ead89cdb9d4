"""The monitor's steps, one group at a time: decide, commit off the loop, then apply.

A *step* is a function of a :class:`~.journal.Journal`: it reads the campaigns in
memory, records its transitions in the journal and returns what to do once they are
durable (acknowledge reports, answer a client, offer activities, cancel attempts).
:class:`Committer` takes every step queued meanwhile as one group, writes the group's
records in one transaction in its single writer thread (group commit, off the event
loop), and only then applies the group's results, in order.

When the write fails, memory is rolled back to what it was before the group and the
group is taken again after a backoff, so a full disk for a few seconds delays
campaigns but loses nothing; after :attr:`Committer.give_up_after_s` of failures the
committer gives up (the monitor then stops the agent) rather than run on with memory
that the journal does not have.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from zambeze_mesh.agent.journal import Journal
from zambeze_mesh.errors import Unavailable
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.store.writer import StoreWriter

log = logging.getLogger("zambeze_mesh.monitor")

#: What a step returns: what to do once its records are committed (or None).
After = Callable[[], None] | None
#: A step: record transitions into the journal, return what to apply after the commit.
Step = Callable[[Journal], After]

#: Failing commits are retried for this long before the committer gives up.
GIVE_UP_AFTER_S = 60.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0


@dataclass
class _Pending:
    step: Step
    done: asyncio.Future[None] | None


class Committer:
    """Runs steps in order, grouped, with commit-then-apply (see the module doc)."""

    def __init__(
        self,
        journal: Callable[[], Journal],
        on_give_up: Callable[[BaseException], None],
        *,
        give_up_after_s: float = GIVE_UP_AFTER_S,
    ) -> None:
        self._journal = journal
        self._on_give_up = on_give_up
        self.give_up_after_s = give_up_after_s
        self._queue: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._writer = StoreWriter("zmesh-journal")
        #: Set once the committer gave up: every later step is refused.
        self.broken: BaseException | None = None
        #: Groups written, and writes that failed (for tests and logs).
        self.groups = 0
        self.failures = 0

    def step(self, step: Step, *, wait: bool = False) -> asyncio.Future[None] | None:
        """Queue ``step``; with ``wait`` a future done once it is committed and applied."""
        if self.broken is not None:
            if wait:
                raise Unavailable(f"the campaign journal cannot be written: {self.broken}")
            return None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] | None = loop.create_future() if wait else None
        self._queue.append(_Pending(step, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drive(), name="zmesh-journal-steps")
        return done

    async def close(self) -> None:
        """Finish the group being written (steps still queued are dropped)."""
        self._queue.clear()
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._writer.close()

    async def _drive(self) -> None:
        while self._queue and self.broken is None:
            group, self._queue = self._queue, []
            await self._take(group)

    async def _take(self, group: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        delay = BACKOFF_MIN_S
        while group:
            j = self._journal()
            afters, bad = self._decide(j, group)
            if bad is not None:
                # A bug in one step: drop it (its caller hears), take the others again.
                j.rollback()
                pending, exc = group.pop(bad[0]), bad[1]
                log.error("a campaign step failed", exc_info=exc)
                if pending.done is not None and not pending.done.done():
                    pending.done.set_exception(exc)
                continue
            try:
                await self._writer.run(j.write)
            except Exception as exc:
                j.rollback()
                self.failures += 1
                now = loop.time()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self.give_up_after_s:
                    self._give_up(exc, group)
                    return
                log_event(
                    log,
                    "journal.commit_failed",
                    level=logging.WARNING,
                    reason=str(exc),
                    retry_in_s=round(delay, 3),
                    steps=len(group),
                )
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)
                continue
            self.groups += 1
            j.applied()
            for pending, after in zip(group, afters, strict=True):
                if after is not None:
                    try:
                        after()
                    except Exception:
                        log.exception("applying a committed campaign step failed")
                if pending.done is not None and not pending.done.done():
                    pending.done.set_result(None)
            return

    @staticmethod
    def _decide(
        j: Journal, group: list[_Pending]
    ) -> tuple[list[After], tuple[int, Exception] | None]:
        afters: list[After] = []
        for i, pending in enumerate(group):
            try:
                afters.append(pending.step(j))
            except Exception as exc:
                return afters, (i, exc)
        return afters, None

    def _give_up(self, exc: BaseException, group: list[_Pending]) -> None:
        self.broken = exc
        log_event(
            log,
            "journal.unwritable",
            level=logging.ERROR,
            reason=str(exc),
            after_s=self.give_up_after_s,
        )
        refused = Unavailable(f"the campaign journal cannot be written: {exc}")
        for pending in group + self._queue:
            if pending.done is not None and not pending.done.done():
                pending.done.set_exception(refused)
        self._queue.clear()
        self._on_give_up(exc)
