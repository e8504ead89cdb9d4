"""Scheduling and campaign protobufs ↔ scheduling library types (one edge module)."""

from __future__ import annotations

import time

from zambeze_mesh.scheduling import Bid, Tender, TenderKey
from zambeze_mesh.scheduling.states import from_proto, to_proto
from zambeze_mesh.v1 import common_pb2, scheduling_pb2

__all__ = ["bid_from_pb", "bid_to_pb", "event", "from_proto", "key_of", "tender_to_pb", "to_proto"]


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


def key_of(t: scheduling_pb2.Tender) -> TenderKey:
    """The negotiation key of a wire tender."""
    return TenderKey(t.campaign_id, t.activity, t.attempt)


def tender_to_pb(t: Tender, *, for_bids: bool = False) -> scheduling_pb2.Tender:
    """A library tender to the wire (the original spec travels along).

    ``for_bids``: for a call for proposals, a shipped function is left out (only its
    size travels, in ``function_bytes``): only the winner needs it, with the award.
    """
    pb = scheduling_pb2.Tender(
        campaign_id=t.key.campaign_id,
        activity=t.key.activity,
        attempt=t.key.attempt,
        owner=t.owner,
    )
    spec = t.activity.spec
    if spec is not None:
        pb.spec.CopyFrom(spec)
        if for_bids and spec.WhichOneof("body") == "python" and spec.python.function:
            pb.function_bytes = len(spec.python.function)
            pb.spec.python.ClearField("function")
    return pb


def bid_to_pb(b: Bid) -> scheduling_pb2.Bid:
    """A bid to the wire."""
    return scheduling_pb2.Bid(
        campaign_id=b.key.campaign_id,
        activity=b.key.activity,
        attempt=b.key.attempt,
        estimate_s=b.estimate_s,
        queue_wait_s=b.queue_wait_s,
        transfer_s=b.transfer_s,
        refused=b.refused,
        reason=b.reason,
        busy=b.busy,
        marginal_s=b.marginal_s,
    )


def bid_from_pb(pb: scheduling_pb2.Bid) -> Bid:
    """A bid from the wire."""
    return Bid(
        key=TenderKey(pb.campaign_id, pb.activity, pb.attempt),
        estimate_s=max(0.0, pb.estimate_s),
        refused=pb.refused,
        reason=pb.reason[:500],
        queue_wait_s=pb.queue_wait_s,
        transfer_s=pb.transfer_s,
        busy=pb.busy and pb.refused,
        marginal_s=pb.marginal_s if 0 <= pb.marginal_s < 86_400 else 0.0,
    )


def event(
    cid: str,
    activity: str = "",
    state: str = "",
    *,
    campaign_state: int = 0,
    attempt: int = 0,
    agent: str = "",
    message: str = "",
    detail: dict[str, str] | None = None,
    result: bytes = b"",
) -> common_pb2.Event:
    """Build an event (seq is assigned when the monitor journals it)."""
    ev = common_pb2.Event(
        campaign_id=cid,
        activity=activity,
        attempt=attempt,
        agent=agent,
        message=message,
        time_unix_ms=now_ms(),
        result=result,
        campaign_state=campaign_state,  # type: ignore[arg-type]
    )
    if state:
        ev.state = to_proto(state)
    if detail:
        ev.detail.update(detail)
    return ev
