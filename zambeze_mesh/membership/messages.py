"""Membership protocol messages as plain frozen dataclasses.

These are what the :class:`~zambeze_mesh.membership.swim.Swim` state machine
consumes and produces. ``wire.py`` converts them to and from the protobuf
contract at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from zambeze_mesh.membership.status import MemberStatus

ALIVE: Final = MemberStatus.ALIVE
SUSPECT: Final = MemberStatus.SUSPECT
DEAD: Final = MemberStatus.DEAD
LEFT: Final = MemberStatus.LEFT
#: An update's kind is the status it announces.
UPDATE_KINDS: Final = frozenset(MemberStatus)


@dataclass(frozen=True, slots=True)
class Update:
    """One piggy-backed membership update (memberlist alive/suspect/dead/leave).

    ``address`` and ``record`` are meaningful for ``alive`` and ``left``;
    ``source`` names who raised a suspicion or declared a death.
    """

    kind: MemberStatus
    name: str
    incarnation: int
    address: str = ""
    record: Any = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe; answered with :class:`Ack`."""

    seq: int
    source: str
    target: str
    piggyback: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the callee to probe ``target`` for us; answered with :class:`Ack` or :class:`Nack`."""

    seq: int
    source: str
    target: str
    target_address: str
    piggyback: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a probe (direct, or relayed by an indirect prober)."""

    seq: int
    source: str
    piggyback: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: the indirect prober got no answer from the target in time."""

    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Gossip:
    """One-way piggy-backed dissemination."""

    source: str
    updates: tuple[Update, ...]


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Push-pull: the caller's full view; answered with :class:`SyncResponse`."""

    source: str
    state: tuple[Update, ...]
    join: bool = False


@dataclass(frozen=True, slots=True)
class SyncResponse:
    """Push-pull: the callee's full view."""

    source: str
    state: tuple[Update, ...]


@dataclass(frozen=True, slots=True)
class Leave:
    """One-way graceful departure announcement (a ``left`` update)."""

    update: Update


Message = Ping | PingReq | Ack | Nack | Gossip | SyncRequest | SyncResponse | Leave
"""Every message the protocol exchanges."""

REQUEST_TYPES: Final = (Ping, PingReq, SyncRequest)
"""Messages answered by a reply (the others are one-way)."""
