"""A slow store commit does not stop the membership protocol.

Two in-process agents (real gRPC, real mTLS). One agent's store is made to block a
commit of the gossip step (as a checkpoint, a slow disk or another process holding the
write lock would) until that agent has sent more protocol messages: the step queues
its writes on a writer thread, so the event loop, and with it the protocol period,
goes on; the write still lands, and every write lands in order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from sqlite3 import Connection

from tests.helpers.inproc import mesh, wait_until
from zambeze_mesh.store import Store
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store.writer import StoreWriter
from zambeze_mesh.transport.grpc_transport import GrpcTransport

#: The most a blocked commit waits for the protocol to go on (a generous bound).
BLOCK_AT_MOST_S = 3.0


class BlockingStore:
    """A store whose next write blocks until ``transport`` has sent more messages."""

    def __init__(self, store: Store, transport: GrpcTransport) -> None:
        self._store = store
        self._transport = transport
        self.armed = False
        self.sent_while_blocked: int | None = None
        self.blocked_on: str | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        if self.armed:
            self.armed = False
            self.blocked_on = threading.current_thread().name
            before = self._transport.sent
            deadline = time.monotonic() + BLOCK_AT_MOST_S
            while self._transport.sent == before and time.monotonic() < deadline:
                time.sleep(0.01)  # the commit waits (on whatever thread runs it)
            self.sent_while_blocked = self._transport.sent - before
        with self._store.tx() as db:
            yield db


def test_a_blocked_commit_does_not_stop_the_protocol(tmp_path: Path) -> None:
    async def go() -> None:
        async with mesh(tmp_path, 2) as agents:
            a = agents[1]
            gossip = a.gossip
            assert gossip is not None and a.store is not None
            slow = BlockingStore(a.store, gossip.transport)
            gossip.store = slow  # type: ignore[assignment]
            slow.armed = True
            # Our load changed: the step re-signs our record at a new incarnation and
            # persists that incarnation.
            inc_before = gossip.swim.incarnation
            gossip.set_load(a.config.slots + 1)
            inc = gossip.swim.incarnation
            assert inc > inc_before
            await wait_until(lambda: slow.sent_while_blocked is not None, 10, "the write")
            assert slow.sent_while_blocked, "no protocol message went out during the commit"
            assert slow.blocked_on != threading.main_thread().name
            assert isinstance(gossip.writer, StoreWriter)
            await gossip.writer.flush()
            assert idstore.load_identity(a.store).incarnation >= inc
            # The peer never stopped hearing from it.
            peer = agents[0].gossip
            assert peer is not None
            assert {m.name: m.status for m in peer.members()}[a.name] == "alive"

    asyncio.run(go())
