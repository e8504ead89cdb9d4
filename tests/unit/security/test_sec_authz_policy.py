"""The authorization policy table (pure function)."""

from __future__ import annotations

import pytest

from zambeze_mesh.errors import NotPermitted, Unauthenticated
from zambeze_mesh.security import Caller, Identity, authorize, current_caller

AGENT = Caller.agent(Identity.agent("alpha", "a1"))
CLIENT = Caller.client(Identity.client("alpha", "alice"))
LOCAL = Caller.local()
ANON = Caller.anonymous()

OK = None
DENIED = NotPermitted
UNAUTH = Unauthenticated

M = "/zambeze_mesh.v1."
TABLE: list[tuple[str, dict[Caller, type[Exception] | None]]] = [
    (M + "Membership/Join", {AGENT: OK, CLIENT: OK, LOCAL: OK, ANON: OK}),
    ("/grpc.health.v1.Health/Check", {AGENT: OK, CLIENT: OK, LOCAL: OK, ANON: UNAUTH}),
    ("/grpc.health.v1.Health/Watch", {AGENT: OK, CLIENT: OK, LOCAL: OK, ANON: UNAUTH}),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        {AGENT: OK, CLIENT: OK, LOCAL: OK, ANON: UNAUTH},
    ),
    (M + "Membership/Ping", {AGENT: OK, CLIENT: DENIED, LOCAL: DENIED, ANON: UNAUTH}),
    (M + "Membership/Gossip", {AGENT: OK, CLIENT: DENIED, LOCAL: DENIED, ANON: UNAUTH}),
    (M + "Membership/Leave", {AGENT: OK, CLIENT: DENIED, LOCAL: DENIED, ANON: UNAUTH}),
    (M + "Membership/Revoke", {AGENT: OK, CLIENT: DENIED, LOCAL: OK, ANON: UNAUTH}),
    (M + "Membership/PilotToken", {AGENT: OK, CLIENT: DENIED, LOCAL: DENIED, ANON: UNAUTH}),
    (M + "Scheduling/Award", {AGENT: OK, CLIENT: DENIED, LOCAL: DENIED, ANON: UNAUTH}),
    (M + "Data/Fetch", {AGENT: OK, CLIENT: DENIED, LOCAL: DENIED, ANON: UNAUTH}),
    (M + "Campaigns/Submit", {AGENT: OK, CLIENT: OK, LOCAL: OK, ANON: UNAUTH}),
    (M + "Campaigns/ListMembers", {AGENT: OK, CLIENT: OK, LOCAL: OK, ANON: UNAUTH}),
    (M + "Admin/Shutdown", {AGENT: DENIED, CLIENT: DENIED, LOCAL: DENIED, ANON: DENIED}),
    ("/other.Service/Call", {AGENT: DENIED, CLIENT: DENIED, LOCAL: DENIED, ANON: DENIED}),
    ("garbage", {AGENT: DENIED, CLIENT: DENIED, LOCAL: DENIED, ANON: DENIED}),
    ("/zambeze_mesh.v1.Membership", {AGENT: DENIED, ANON: DENIED}),
]

CASES = [(method, caller, want) for method, row in TABLE for caller, want in row.items()]


@pytest.mark.parametrize(("method", "caller", "want"), CASES)
def test_policy(method: str, caller: Caller, want: type[Exception] | None) -> None:
    if want is None:
        authorize(method, caller)
    else:
        with pytest.raises(want):
            authorize(method, caller)


def test_denial_messages() -> None:
    with pytest.raises(NotPermitted, match=r"client identity spiffe://alpha/client/alice may not"):
        authorize(M + "Membership/Ping", CLIENT)
    with pytest.raises(Unauthenticated, match="requires an agent certificate"):
        authorize(M + "Data/Fetch", ANON)


def test_caller_helpers() -> None:
    assert Caller.from_identity(Identity.agent("m", "x")).kind == "agent"
    assert Caller.from_identity(Identity.client("m", "x")).kind == "client"
    assert CLIENT.name == "alice" and LOCAL.name is None
    assert current_caller() is None
