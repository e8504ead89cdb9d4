"""Membership messages ↔ ``zambeze_mesh.v1.membership_pb2`` (the wire edge).

Alive and left updates carry the member's :class:`~zambeze_mesh.v1.common_pb2.SignedRecord`
as their ``record``; their address is read from that record, so the address can only
ever be what the member itself signed.
"""

from __future__ import annotations

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.membership import messages as m
from zambeze_mesh.v1 import common_pb2, membership_pb2

MAX_UPDATES = 4096

_KIND_TO_PB = {
    m.ALIVE: membership_pb2.MemberUpdate.KIND_ALIVE,
    m.SUSPECT: membership_pb2.MemberUpdate.KIND_SUSPECT,
    m.DEAD: membership_pb2.MemberUpdate.KIND_DEAD,
    m.LEFT: membership_pb2.MemberUpdate.KIND_LEFT,
}
_PB_TO_KIND = {v: k for k, v in _KIND_TO_PB.items()}


def update_to_pb(u: m.Update) -> membership_pb2.MemberUpdate:
    """One update to protobuf."""
    pb = membership_pb2.MemberUpdate(
        kind=_KIND_TO_PB[u.kind], name=u.name, incarnation=u.incarnation
    )
    setattr(pb, "from", u.source)
    if isinstance(u.record, common_pb2.SignedRecord):
        pb.signed.CopyFrom(u.record)
    return pb


def update_from_pb(pb: membership_pb2.MemberUpdate) -> m.Update:
    """One update from protobuf; the address of alive/left updates comes from the record."""
    kind = _PB_TO_KIND.get(pb.kind)
    if kind is None:
        raise InvalidInput(f"unknown member update kind {pb.kind}")
    record: common_pb2.SignedRecord | None = None
    address = ""
    if pb.HasField("signed"):
        record = common_pb2.SignedRecord()
        record.CopyFrom(pb.signed)
        inner = common_pb2.AgentRecord()
        try:
            inner.ParseFromString(record.record)
        except Exception:
            raise InvalidInput("member update carries an unreadable record") from None
        address = inner.address
    elif kind in (m.ALIVE, m.LEFT):
        raise InvalidInput(f"{kind} update for {pb.name!r} carries no signed record")
    return m.Update(kind, pb.name, pb.incarnation, address, record, getattr(pb, "from"))


def updates_from_pb(items: object) -> tuple[m.Update, ...]:
    """A bounded list of updates."""
    seq = list(items)  # type: ignore[call-overload]
    if len(seq) > MAX_UPDATES:
        raise InvalidInput(f"too many member updates ({len(seq)} > {MAX_UPDATES})")
    return tuple(update_from_pb(u) for u in seq)


def to_pb(msg: m.Message) -> object:
    """A membership message to its request/response protobuf."""
    if isinstance(msg, m.Ping):
        pb_ping = membership_pb2.PingRequest(seq=msg.seq, target=msg.target)
        setattr(pb_ping, "from", msg.source)
        pb_ping.piggyback.extend(update_to_pb(u) for u in msg.piggyback)
        return pb_ping
    if isinstance(msg, m.PingReq):
        pb_req = membership_pb2.PingReqRequest(
            seq=msg.seq, target=msg.target, target_address=msg.target_address
        )
        setattr(pb_req, "from", msg.source)
        pb_req.piggyback.extend(update_to_pb(u) for u in msg.piggyback)
        return pb_req
    if isinstance(msg, m.Ack | m.Nack):
        pb_ack = membership_pb2.Ack(seq=msg.seq, ok=isinstance(msg, m.Ack))
        setattr(pb_ack, "from", msg.source)
        if isinstance(msg, m.Ack):
            pb_ack.piggyback.extend(update_to_pb(u) for u in msg.piggyback)
        return pb_ack
    if isinstance(msg, m.Gossip):
        pb_g = membership_pb2.GossipRequest(updates=[update_to_pb(u) for u in msg.updates])
        setattr(pb_g, "from", msg.source)
        return pb_g
    if isinstance(msg, m.SyncRequest):
        pb_s = membership_pb2.SyncRequest(state=[update_to_pb(u) for u in msg.state], join=msg.join)
        setattr(pb_s, "from", msg.source)
        return pb_s
    if isinstance(msg, m.SyncResponse):
        pb_r = membership_pb2.SyncResponse(state=[update_to_pb(u) for u in msg.state])
        setattr(pb_r, "from", msg.source)
        return pb_r
    if isinstance(msg, m.Leave):
        return membership_pb2.LeaveRequest(update=update_to_pb(msg.update))
    raise TypeError(f"not a membership message: {type(msg).__name__}")


def from_pb(pb: object) -> m.Message:
    """A membership protobuf (request or response) to its message."""
    if isinstance(pb, membership_pb2.PingRequest):
        return m.Ping(pb.seq, getattr(pb, "from"), pb.target, updates_from_pb(pb.piggyback))
    if isinstance(pb, membership_pb2.PingReqRequest):
        return m.PingReq(
            pb.seq,
            getattr(pb, "from"),
            pb.target,
            pb.target_address,
            updates_from_pb(pb.piggyback),
        )
    if isinstance(pb, membership_pb2.Ack):
        if pb.ok:
            return m.Ack(pb.seq, getattr(pb, "from"), updates_from_pb(pb.piggyback))
        return m.Nack(pb.seq, getattr(pb, "from"))
    if isinstance(pb, membership_pb2.GossipRequest):
        return m.Gossip(getattr(pb, "from"), updates_from_pb(pb.updates))
    if isinstance(pb, membership_pb2.SyncRequest):
        return m.SyncRequest(getattr(pb, "from"), updates_from_pb(pb.state), pb.join)
    if isinstance(pb, membership_pb2.SyncResponse):
        return m.SyncResponse(getattr(pb, "from"), updates_from_pb(pb.state))
    if isinstance(pb, membership_pb2.LeaveRequest):
        return m.Leave(update_from_pb(pb.update))
    raise TypeError(f"not a membership protobuf: {type(pb).__name__}")
