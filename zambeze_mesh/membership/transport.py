"""The one interface membership uses to talk to peers: implemented over gRPC and in
memory by :mod:`zambeze_mesh.transport`, which sits above this package."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

Handler = Callable[[str, object], Awaitable[object | None]]
"""``handler(source_address, message) -> reply or None``, served for incoming messages."""


@runtime_checkable
class Transport(Protocol):
    """Request/response messaging to peers by address.

    ``request`` returns the reply for request/response messages (Ping → Ack,
    PingReq → Ack/Nack, SyncRequest → SyncResponse) and None for one-way ones
    (Gossip, Leave); it raises :class:`zambeze_mesh.errors.Unavailable` when the
    peer cannot be reached or does not answer within ``timeout`` seconds.
    """

    @property
    def address(self) -> str:
        """Our own advertised address (what peers see as the source)."""
        ...

    async def request(self, address: str, msg: object, timeout: float) -> object | None:
        """Send ``msg`` to ``address`` and wait at most ``timeout`` for the reply."""
        ...

    def serve(self, handler: Handler) -> None:
        """Deliver incoming messages to ``handler``; its return value is the reply."""
        ...

    async def close(self) -> None:
        """Stop serving and release resources."""
        ...
