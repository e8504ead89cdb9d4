"""MemberStatus: one enum, matching the protobuf enum and the stored spelling."""

from __future__ import annotations

import pytest

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.membership.messages import ALIVE, LEFT
from zambeze_mesh.membership.status import GONE, LIVE, MemberStatus
from zambeze_mesh.v1 import common_pb2


def test_matches_the_proto_enum_both_ways() -> None:
    wire = {n for n in common_pb2.MemberStatus.keys() if n != "MEMBER_STATUS_UNSPECIFIED"}
    assert {s.proto_name for s in MemberStatus} == wire
    for s in MemberStatus:
        number = common_pb2.MemberStatus.Value(s.proto_name)
        assert MemberStatus.parse(common_pb2.MemberStatus.Name(number)) is s


def test_values_are_the_stored_spelling_and_every_spelling_parses() -> None:
    # Rows in the members table and gossip messages always used these strings.
    assert [s.value for s in MemberStatus] == ["alive", "suspect", "dead", "left"]
    assert MemberStatus("suspect") is MemberStatus.SUSPECT
    for text in ("dead", "DEAD", "Dead", "MEMBER_STATUS_DEAD", "member_status_dead"):
        assert MemberStatus.parse(text) is MemberStatus.DEAD
    with pytest.raises(InvalidInput):
        MemberStatus.parse("MEMBER_STATUS_UNSPECIFIED")
    with pytest.raises(InvalidInput):
        MemberStatus.parse("joining")


def test_live_and_gone_split_the_statuses() -> None:
    assert LIVE | GONE == set(MemberStatus) and not LIVE & GONE
    assert MemberStatus.SUSPECT.is_live and not MemberStatus.LEFT.is_live
    # The message constants are the enum members, and compare equal to the strings.
    assert ALIVE is MemberStatus.ALIVE and LEFT == "left"
