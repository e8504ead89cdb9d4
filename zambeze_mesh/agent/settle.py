"""The end of an agent process: let gRPC finish what a stopped server cancelled."""

from __future__ import annotations

import asyncio

#: How long a stopped agent waits for gRPC to end the calls its server cancelled.
CALLS_SETTLE_S = 3.0


async def settle_tasks(timeout: float = CALLS_SETTLE_S) -> int:
    """Let the tasks still running in this loop end (at most ``timeout`` s); how many did not.

    A stopped gRPC aio server ends each call it cancelled (a stream a peer still held
    open past the grace period: a contractor's report stream, a Watch) in tasks of its
    own, a few loop turns later. ``asyncio.run`` cancels whatever is still pending when
    the main coroutine returns, and gRPC prints each such cancellation as a
    ``CancelledError`` traceback on stderr (``agent.out``) although nothing went wrong.
    Await this at the end of a process's main coroutine, once its agent has shut down
    (only such tasks are left then); never while other agents share the loop.
    """
    me = asyncio.current_task()
    pending = {t for t in asyncio.all_tasks() if t is not me}
    if not pending:
        return 0
    _, left = await asyncio.wait(pending, timeout=timeout)
    return len(left)
