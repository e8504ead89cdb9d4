"""Inputs, effects and configuration of the contract net (:mod:`.contract_net`).

Plain frozen dataclasses: the driver builds inputs from wire messages, and turns
effects into RPCs, timers and journaled events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from zambeze_mesh.scheduling.bidding import Bid, TenderKey
from zambeze_mesh.scheduling.model import ActivityDef

# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ContractNetConfig:
    """Timing and retry knobs of the contract net.

    The deadline of the calls for proposals sent in one step is ``now +
    bid_deadline_s + bid_deadline_per_tender_s * n``, where ``n`` is the largest
    number of tenders carried by one of those :class:`SendCFP` (a contractor answers
    a big batch more slowly). Awards likewise, with ``award_deadline_s`` and
    ``award_deadline_per_item_s`` per tender of the largest :class:`SendAward`.
    """

    bid_deadline_s: float = 0.5
    award_deadline_s: float = 5.0
    max_rounds: int = 3
    remember_finished: int = 100_000
    bid_deadline_per_tender_s: float = 0.0005
    award_deadline_per_item_s: float = 0.0005

    @classmethod
    def local(cls) -> ContractNetConfig:
        """Agents on one host or a fast LAN segment."""
        return cls()

    @classmethod
    def lan(cls) -> ContractNetConfig:
        """A campus network."""
        return cls(bid_deadline_s=1.0, award_deadline_s=5.0)

    @classmethod
    def wan(cls) -> ContractNetConfig:
        """Cross-facility links."""
        return cls(bid_deadline_s=3.0, award_deadline_s=15.0)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Tender:
    """One activity put out to tender, with the agents to ask.

    ``excluded`` (name -> reason), from :func:`~.matching.candidates`, explains a
    failure when there are no candidates.
    """

    key: TenderKey
    activity: ActivityDef
    candidates: tuple[str, ...]
    excluded: Mapping[str, str] = field(default_factory=dict)
    #: The identity the activity runs as (its campaign's owner, see security.owners).
    owner: str = ""


@dataclass(frozen=True)
class Decision:
    """A contractor's answer to one award."""

    key: TenderKey
    accepted: bool
    reason: str = ""


@dataclass(frozen=True)
class Announce:
    """Start negotiations for these tenders."""

    tenders: Sequence[Tender]


@dataclass(frozen=True)
class BidsReceived:
    """Bids (and refusals) from one agent."""

    from_agent: str
    bids: Sequence[Bid]


@dataclass(frozen=True)
class Deadline:
    """A timer set by :class:`SetTimer` has fired."""

    timer_id: int


@dataclass(frozen=True)
class AwardDecisions:
    """Accept/reject decisions from one agent."""

    from_agent: str
    decisions: Sequence[Decision]


@dataclass(frozen=True)
class AgentDown:
    """Membership says the agent is dead or left (or it cannot be reached)."""

    name: str


@dataclass(frozen=True)
class Withdraw:
    """Stop these negotiations (campaign cancelled); reported as :class:`Withdrawn`.

    A key waiting to be offered again after :class:`Deferred` ends too, as
    ``Withdrawn(key, None)``; it cannot be announced again afterwards.
    """

    keys: Sequence[TenderKey]


Input = Announce | BidsReceived | Deadline | AwardDecisions | AgentDown | Withdraw

# --------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class SendCFP:
    """Send one call for proposals carrying ``tenders`` to agent ``to``."""

    to: str
    tenders: tuple[Tender, ...]
    deadline: float


@dataclass(frozen=True)
class SendAward:
    """Award ``tenders`` to agent ``to`` (one AwardRequest)."""

    to: str
    tenders: tuple[Tender, ...]

    @property
    def keys(self) -> tuple[TenderKey, ...]:
        """The keys awarded."""
        return tuple(t.key for t in self.tenders)


@dataclass(frozen=True)
class SetTimer:
    """Feed ``Deadline(timer_id)`` back at time ``at``."""

    timer_id: int
    at: float


@dataclass(frozen=True)
class Placed:
    """The negotiation ended: ``agent`` accepted the award."""

    key: TenderKey
    agent: str
    estimate_s: float


@dataclass(frozen=True)
class Failed:
    """The negotiation ended without a contractor, for good (see :class:`Deferred`)."""

    key: TenderKey
    reason: str


@dataclass(frozen=True)
class Deferred:
    """The negotiation ended without a contractor for now, but not for good.

    Some capable agent refused only for lack of room (``Bid.busy``), did not answer
    in time, or rejected the award: offer the activity again later with a new
    :class:`Announce` of the same key. ``reason`` lists each agent's answer.
    """

    key: TenderKey
    reason: str


@dataclass(frozen=True)
class Withdrawn:
    """The negotiation was withdrawn; ``awarded_to`` may have accepted meanwhile."""

    key: TenderKey
    awarded_to: str | None


@dataclass(frozen=True)
class LateAcceptance:
    """``agent`` accepted an award it no longer holds: cancel that attempt there."""

    key: TenderKey
    agent: str


Event = Placed | Failed | Deferred | Withdrawn | LateAcceptance


@dataclass
class Effects:
    """What the driver must do after one step."""

    messages: list[SendCFP | SendAward] = field(default_factory=list)
    timers: list[SetTimer] = field(default_factory=list)
    cancel_timers: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def cfps(self) -> list[SendCFP]:
        """The calls for proposals to send."""
        return [m for m in self.messages if isinstance(m, SendCFP)]

    @property
    def awards(self) -> list[SendAward]:
        """The awards to send."""
        return [m for m in self.messages if isinstance(m, SendAward)]

    @property
    def placed(self) -> list[Placed]:
        """Negotiations that ended with a contractor."""
        return [e for e in self.events if isinstance(e, Placed)]

    @property
    def failed(self) -> list[Failed]:
        """Negotiations that ended without one, for good."""
        return [e for e in self.events if isinstance(e, Failed)]

    @property
    def deferred(self) -> list[Deferred]:
        """Negotiations that ended without one for now: announce them again later."""
        return [e for e in self.events if isinstance(e, Deferred)]
