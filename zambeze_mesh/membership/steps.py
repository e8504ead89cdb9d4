"""Inputs to and outputs of :meth:`Swim.step`."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from zambeze_mesh.membership.events import MemberEvent
from zambeze_mesh.membership.messages import Message


@dataclass(frozen=True, slots=True)
class Start:
    """Begin the protocol; join through ``seeds`` (``(name or None, address)``), if any."""

    seeds: Sequence[tuple[str | None, str]] = ()


@dataclass(frozen=True, slots=True)
class Join:
    """Contact these addresses and merge their state (also valid after Start)."""

    addresses: Sequence[str]


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer set through :class:`SetTimer` is due."""

    key: Hashable


@dataclass(frozen=True, slots=True)
class Received:
    """A message (request or reply) arrived from ``src`` (an address)."""

    src: str
    msg: Message


@dataclass(frozen=True, slots=True)
class SendFailed:
    """Sending ``msg`` to ``dst`` failed (refused, timed out): counts as no answer."""

    dst: str
    msg: Message


@dataclass(frozen=True, slots=True)
class LeaveRequest:
    """Leave the mesh gracefully."""


@dataclass(frozen=True, slots=True)
class UpdateLocal:
    """Our record changed (capabilities, load): bump incarnation and broadcast."""


@dataclass(frozen=True, slots=True)
class Retire:
    """The operator retired ``name`` (its certificate is revoked): it is gone, as LEFT."""

    name: str


Input = Start | Join | TimerFired | Received | SendFailed | LeaveRequest | UpdateLocal | Retire


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to the member ``dst_name`` at ``dst_address``.

    Replies (Ack, Nack, SyncResponse) are Sends to the address the request came from.
    """

    dst_name: str
    dst_address: str
    msg: Message


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Feed ``TimerFired(key)`` back at time ``at`` (stale timers are ignored by the machine)."""

    at: float
    key: Hashable


@dataclass(slots=True)
class Effects:
    """What one step asks the edge to do."""

    sends: list[Send] = field(default_factory=list)
    timers: list[SetTimer] = field(default_factory=list)
    events: list[MemberEvent] = field(default_factory=list)
