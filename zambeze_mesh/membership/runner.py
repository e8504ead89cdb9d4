"""The async edge of membership: drives a :class:`Swim` with the event loop's clock.

The runner is the only place where membership does I/O. It feeds incoming
messages, replies, failures and due timers into :meth:`Swim.step`, performs
the resulting sends over a :class:`Transport`, and publishes member events.
Replies the machine addresses to a request being served (Ack, Nack,
SyncResponse) are returned from the serving handler instead of being sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable, Sequence
from typing import Any

from zambeze_mesh.errors import Unavailable
from zambeze_mesh.membership.events import MemberEvent, MemberState
from zambeze_mesh.membership.messages import (
    Ack,
    Gossip,
    Leave,
    Message,
    Nack,
    Ping,
    PingReq,
    SyncRequest,
    SyncResponse,
)
from zambeze_mesh.membership.steps import (
    Effects,
    Input,
    Join,
    LeaveRequest,
    Received,
    Retire,
    Send,
    SendFailed,
    Start,
    TimerFired,
    UpdateLocal,
)
from zambeze_mesh.membership.swim import Swim
from zambeze_mesh.membership.transport import Transport

log = logging.getLogger(__name__)

_MESSAGE_TYPES = (Ping, PingReq, Ack, Nack, Gossip, SyncRequest, SyncResponse, Leave)


def _reply_key(address: str, msg: object) -> tuple[str, int] | None:
    if isinstance(msg, Ping | PingReq | Ack | Nack):
        return (address, msg.seq)
    if isinstance(msg, SyncRequest | SyncResponse):
        return (address, -1)
    return None


class SwimRunner:
    """Runs one :class:`Swim` over a :class:`Transport` on the running event loop."""

    def __init__(self, swim: Swim, transport: Transport) -> None:
        self.swim = swim
        self.transport = transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[Hashable, list[asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[tuple[str, int], list[asyncio.Future[object]]] = {}
        self._queues: list[asyncio.Queue[MemberEvent | None]] = []
        self._listeners: list[Callable[[MemberEvent], None]] = []
        self._closed = False

    # ------------------------------------------------------------ public
    async def start(self, seeds: Sequence[tuple[str | None, str]] = ()) -> None:
        """Serve the transport and start the protocol, joining through ``seeds``."""
        self._loop = asyncio.get_running_loop()
        self.transport.serve(self._serve)
        self._step(Start(list(seeds)))

    def join(self, addresses: Sequence[str]) -> None:
        """Contact more agents and merge their view."""
        self._step(Join(list(addresses)))

    def update_local(self) -> None:
        """Our record changed: bump the incarnation and gossip it."""
        self._step(UpdateLocal())

    def retire(self, name: str) -> None:
        """``name`` was retired by the operator: treat it as gone (LEFT)."""
        self._step(Retire(name))

    async def leave(self, drain: float = 2.0) -> None:
        """Announce departure, give gossip up to ``drain`` seconds to spread it, then close."""
        self._step(LeaveRequest())
        interval = self.swim.config.gossip_interval
        for _ in range(max(1, int(drain / interval))):
            if not self.swim.pending_broadcasts():
                break
            await asyncio.sleep(interval)
        await self.close()

    async def close(self) -> None:
        """Stop timers and in-flight sends, stop serving, end event iterators."""
        if self._closed:
            return
        self._closed = True
        for handles in self._timers.values():
            for h in handles:
                h.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for futs in self._waiting.values():
            for fut in futs:
                fut.cancel()
        self._waiting.clear()
        for q in self._queues:
            q.put_nowait(None)
        await self.transport.close()

    def members(self) -> list[MemberState]:
        """Snapshot of the current view."""
        return self.swim.members()

    def add_listener(self, callback: Callable[[MemberEvent], None]) -> None:
        """Call ``callback`` synchronously for every member event."""
        self._listeners.append(callback)

    async def events(self) -> AsyncIterator[MemberEvent]:
        """Member events from now on, until :meth:`close`."""
        q: asyncio.Queue[MemberEvent | None] = asyncio.Queue()
        self._queues.append(q)
        try:
            while (ev := await q.get()) is not None:
                yield ev
        finally:
            self._queues.remove(q)

    # ---------------------------------------------------------- internals
    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _step(self, inp: Input) -> None:
        if self._closed:
            return
        self._apply(self.swim.step(self._now(), inp))

    def _apply(self, fx: Effects) -> None:
        assert self._loop is not None
        for t in fx.timers:
            handle = self._loop.call_at(t.at, self._fire, t.key)
            self._timers.setdefault(t.key, []).append(handle)
        for ev in fx.events:
            for q in self._queues:
                q.put_nowait(ev)
            for cb in self._listeners:
                try:
                    cb(ev)
                except Exception:  # a listener must not break the protocol
                    log.exception("membership listener failed")
        for send in fx.sends:
            key = _reply_key(send.dst_address, send.msg)
            futs = self._waiting.get(key) if key is not None else None
            if isinstance(send.msg, Ack | Nack | SyncResponse):
                if futs:
                    fut = futs.pop(0)
                    if not futs:
                        del self._waiting[key]  # type: ignore[arg-type]
                    if not fut.done():
                        fut.set_result(send.msg)
                continue  # a reply nobody waits for any more
            self._spawn(self._deliver(send))

    def _fire(self, key: Hashable) -> None:
        handles = self._timers.get(key)
        if handles:
            handles[:] = [h for h in handles if not h.cancelled() and h.when() > self._now()]
            if not handles:
                del self._timers[key]
        self._step(TimerFired(key))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _timeout(self, msg: Message) -> float:
        cfg = self.swim.config
        if isinstance(msg, Ping | PingReq):
            return self.swim.awareness.scale(cfg.probe_interval)
        return cfg.request_timeout

    async def _deliver(self, send: Send) -> None:
        try:
            reply = await self.transport.request(
                send.dst_address, send.msg, self._timeout(send.msg)
            )
        except Unavailable:
            self._step(SendFailed(send.dst_address, send.msg))
            return
        except Exception:
            log.exception("membership send to %s failed", send.dst_address)
            self._step(SendFailed(send.dst_address, send.msg))
            return
        if isinstance(reply, _MESSAGE_TYPES):
            self._step(Received(send.dst_address, reply))

    async def _serve(self, src: str, msg: object) -> object | None:
        """Transport handler: feed ``msg`` in; return the reply the machine produced."""
        if self._closed or not isinstance(msg, _MESSAGE_TYPES):
            return None
        key = _reply_key(src, msg) if isinstance(msg, Ping | PingReq | SyncRequest) else None
        fut: asyncio.Future[object] | None = None
        if key is not None:
            fut = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(key, []).append(fut)
        self._step(Received(src, msg))
        if fut is None:
            return None
        try:
            return await asyncio.wait_for(fut, self._timeout(msg))
        except (TimeoutError, asyncio.CancelledError):
            futs = self._waiting.get(key)  # type: ignore[arg-type]
            if futs and fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._waiting[key]  # type: ignore[arg-type]
            return None
