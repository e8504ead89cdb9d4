"""What the membership layer tells the rest of the agent: member snapshots and events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from zambeze_mesh.membership.status import MemberStatus

EVENT_KINDS: Final = frozenset({"alive", "updated", "suspect", "dead", "left", "removed"})


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member as this agent sees it.

    ``status`` is a :class:`~zambeze_mesh.membership.status.MemberStatus`;
    ``state_change`` is the (caller's clock) time the status last changed.
    """

    name: str
    address: str
    incarnation: int
    status: MemberStatus
    record: Any
    state_change: float


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A change in the view.

    ``kind``: ``alive`` (new member, or back from suspect/dead/left), ``updated``
    (alive member with a new address or record), ``suspect``, ``dead``, ``left``,
    ``removed`` (a dead or left member was forgotten).
    """

    kind: str
    member: MemberState
