"""Plain dataclasses for what the ``Campaigns`` service returns, and their conversion.

Wire types stay at this edge: the rest of the client works with these.
State names are short upper-case strings (``"RUNNING"``, ``"SUCCEEDED"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from zambeze_mesh.membership.status import MemberStatus
from zambeze_mesh.v1 import campaigns_pb2, common_pb2

__all__ = [
    "FINAL_ACTIVITY_STATES",
    "FINAL_CAMPAIGN_STATES",
    "ActivityStatus",
    "CampaignStatus",
    "Event",
    "Member",
    "Members",
    "SubmitResult",
    "activity_state_name",
    "campaign_state_name",
]

FINAL_ACTIVITY_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"})
FINAL_CAMPAIGN_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


_ACTIVITY_NAMES: dict[int, str] = {
    int(v): k.removeprefix("ACTIVITY_STATE_") for k, v in common_pb2.ActivityState.items()
}
_CAMPAIGN_NAMES: dict[int, str] = {
    int(v): k.removeprefix("CAMPAIGN_STATE_") for k, v in common_pb2.CampaignState.items()
}


def activity_state_name(value: int) -> str:
    """``ACTIVITY_STATE_RUNNING`` (7) -> ``"RUNNING"``; 0 -> ``"UNSPECIFIED"``."""
    name = _ACTIVITY_NAMES.get(value)
    return name if name is not None else f"UNKNOWN({value})"


def campaign_state_name(value: int) -> str:
    """``CAMPAIGN_STATE_SUCCEEDED`` (2) -> ``"SUCCEEDED"``."""
    name = _CAMPAIGN_NAMES.get(value)
    return name if name is not None else f"UNKNOWN({value})"


@dataclass(frozen=True)
class SubmitResult:
    """What ``Submit`` returned: the campaign id and the agent monitoring it."""

    campaign_id: str
    monitor: str


@dataclass(frozen=True, slots=True)
class Event:
    """One state change of a campaign (``activity == ""``) or of one of its activities."""

    seq: int
    campaign_id: str
    activity: str
    state: str
    campaign_state: str = ""
    attempt: int = 0
    agent: str = ""
    message: str = ""
    time_unix_ms: int = 0
    detail: Mapping[str, str] = field(default_factory=dict)
    result: bytes = b""

    @property
    def is_campaign_event(self) -> bool:
        """True for campaign-level events."""
        return not self.activity

    @property
    def is_final(self) -> bool:
        """True for the campaign-level event that ends the campaign."""
        return self.is_campaign_event and self.campaign_state in FINAL_CAMPAIGN_STATES

    @classmethod
    def from_proto(cls, ev: common_pb2.Event) -> Event:
        """Convert a wire ``Event``."""
        return cls(
            seq=ev.seq,
            campaign_id=ev.campaign_id,
            activity=ev.activity,
            state=activity_state_name(ev.state) if ev.state else "",
            campaign_state=campaign_state_name(ev.campaign_state) if ev.campaign_state else "",
            attempt=ev.attempt,
            agent=ev.agent,
            message=ev.message,
            time_unix_ms=ev.time_unix_ms,
            detail=dict(ev.detail),
            result=ev.result,
        )


@dataclass(frozen=True)
class ActivityStatus:
    """Current state of one activity."""

    name: str
    state: str
    attempt: int = 0
    agent: str = ""
    message: str = ""
    detail: Mapping[str, str] = field(default_factory=dict)
    result: bytes = b""
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class CampaignStatus:
    """Current state of a campaign and its activities (the ``Get`` result)."""

    campaign_id: str
    name: str
    state: str
    monitor: str = ""
    activities: tuple[ActivityStatus, ...] = ()
    last_seq: int = 0
    created_unix_ms: int = 0
    message: str = ""
    finished_unix_ms: int = 0  # 0 while running

    @property
    def states(self) -> dict[str, str]:
        """Activity name -> state."""
        return {a.name: a.state for a in self.activities}

    @classmethod
    def from_proto(cls, st: campaigns_pb2.CampaignStatus) -> CampaignStatus:
        """Convert a wire ``CampaignStatus``."""
        return cls(
            campaign_id=st.campaign_id,
            name=st.name,
            state=campaign_state_name(st.state),
            monitor=st.monitor,
            activities=tuple(
                ActivityStatus(
                    name=a.name,
                    state=activity_state_name(a.state),
                    attempt=a.attempt,
                    agent=a.agent,
                    message=a.message,
                    detail=dict(a.detail),
                    result=a.result,
                    depends_on=tuple(a.depends_on),
                )
                for a in st.activities
            ),
            last_seq=st.last_seq,
            created_unix_ms=st.created_unix_ms,
            message=st.message,
            finished_unix_ms=st.finished_unix_ms,
        )


@dataclass(frozen=True)
class Member:
    """One mesh member as the connected agent sees it."""

    name: str
    address: str
    status: MemberStatus
    incarnation: int
    is_self: bool
    plugins: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    free_slots: int = 0
    slots: int = 0
    data_roots: tuple[str, ...] = ()
    """Its @agentdir first, then its exported roots (absolute paths on that agent)."""


@dataclass(frozen=True)
class Members:
    """The ``ListMembers`` result."""

    members: tuple[Member, ...]
    self_name: str
    mesh: str

    @classmethod
    def from_proto(cls, resp: campaigns_pb2.ListMembersResponse) -> Members:
        """Convert a wire ``ListMembersResponse``."""
        return cls(
            members=tuple(
                Member(
                    name=m.name,
                    address=m.address,
                    status=MemberStatus.parse(common_pb2.MemberStatus.Name(m.status)),
                    incarnation=m.incarnation,
                    is_self=m.is_self,
                    plugins=tuple(m.capabilities.plugins),
                    labels=dict(m.capabilities.labels),
                    free_slots=m.capabilities.free_slots,
                    slots=m.capabilities.slots,
                    data_roots=tuple(m.capabilities.data_roots),
                )
                for m in resp.members
            ),
            self_name=resp.self_name,
            mesh=resp.mesh,
        )
