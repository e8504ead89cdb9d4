"""An asyncio in-memory network for tests: loss, delay and partitions, no sockets.

Semantics match the discrete-event simulator in ``membership/sim.py``: each
message (request and reply separately) is lost with probability ``loss``,
delayed uniformly in ``delay``, and dropped when a partition separates the
two ends. A lost message looks like a timeout; an address nobody serves looks
like a refused connection. Both raise :class:`Unavailable`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

from zambeze_mesh.errors import Unavailable
from zambeze_mesh.membership.transport import Handler


class MemoryNetwork:
    """A set of in-memory endpoints addressed by arbitrary strings."""

    def __init__(
        self,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be within [0, 1]")
        if delay[0] < 0 or delay[1] < delay[0]:
            raise ValueError("delay must be (lo, hi) with 0 <= lo <= hi")
        self.loss = loss
        self.delay = delay
        self.rng = rng or random.Random()
        self._handlers: dict[str, Handler] = {}
        self._side: dict[str, int] = {}

    def transport(self, address: str) -> MemoryTransport:
        """A new endpoint at ``address``."""
        return MemoryTransport(self, address)

    def partition(self, a: Iterable[str], b: Iterable[str]) -> None:
        """Cut every link between the addresses in ``a`` and those in ``b``."""
        self._side = {**{x: 0 for x in a}, **{x: 1 for x in b}}

    def heal(self) -> None:
        """Remove the partition."""
        self._side = {}

    def blocked(self, a: str, b: str) -> bool:
        """True when a partition separates ``a`` and ``b``."""
        sa, sb = self._side.get(a), self._side.get(b)
        return sa is not None and sb is not None and sa != sb

    def _lost(self, a: str, b: str) -> bool:
        return self.blocked(a, b) or (self.loss > 0 and self.rng.random() < self.loss)

    def _latency(self) -> float:
        lo, hi = self.delay
        return lo if hi <= lo else self.rng.uniform(lo, hi)


class MemoryTransport:
    """One endpoint of a :class:`MemoryNetwork` (implements :class:`Transport`)."""

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self._net = network
        self._address = address
        self._closed = False
        self._handler: Handler | None = None

    @property
    def address(self) -> str:
        """Our address on the network."""
        return self._address

    async def request(self, address: str, msg: object, timeout: float) -> object | None:
        """Deliver ``msg`` to the handler at ``address`` and return its reply."""
        if self._closed:
            raise Unavailable(f"{self._address}: transport closed")
        net = self._net
        handler = net._handlers.get(address)
        if handler is None:
            raise Unavailable(f"{address}: connection refused")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if net._lost(self._address, address):
            await asyncio.sleep(timeout)
            raise Unavailable(f"{address}: timed out")
        await asyncio.sleep(net._latency())
        try:
            async with asyncio.timeout_at(deadline):
                reply = await handler(self._address, msg)
        except TimeoutError:
            raise Unavailable(f"{address}: timed out") from None
        if reply is None:
            return None
        if net._lost(address, self._address):
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            raise Unavailable(f"{address}: timed out")
        await asyncio.sleep(net._latency())
        return reply

    def serve(self, handler: Handler) -> None:
        """Receive messages sent to our address."""
        if self._address in self._net._handlers:
            raise Unavailable(f"{self._address}: address in use")
        self._net._handlers[self._address] = handler
        self._handler = handler

    async def close(self) -> None:
        """Stop serving: peers now get 'connection refused'."""
        self._closed = True
        if self._handler is not None and self._net._handlers.get(self._address) is self._handler:
            del self._net._handlers[self._address]
        self._handler = None
