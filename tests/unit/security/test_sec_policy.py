"""Execution policy and campaign owners: parsing, matching, config round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from zambeze_mesh.errors import InvalidInput, NotPermitted, Unauthenticated
from zambeze_mesh.security.authz import Caller
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.security.owners import LOCAL, Access, owner_of, wire_owner
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.policy import ExecutionPolicy

ALICE = "spiffe://m/client/alice"


def test_empty_policy_allows_everything() -> None:
    assert ExecutionPolicy().refusal(ALICE, "shell", function=True) is None


def test_rules_match_identity_then_star() -> None:
    p = ExecutionPolicy.from_config({ALICE: ["python"], "*": ["*", "functions"]})
    assert p.refusal(ALICE, "python") is None
    assert "plugin 'shell'" in (p.refusal(ALICE, "shell") or "")
    assert "functions" in (p.refusal(ALICE, "python", function=True) or "")
    assert p.refusal("spiffe://m/client/bob", "shell", function=True) is None
    with pytest.raises(NotPermitted):
        p.require(ALICE, "dask")
    only = ExecutionPolicy.from_config({ALICE: ["*"]})
    assert "may not run activities" in (only.refusal("spiffe://m/client/bob", "shell") or "")


@pytest.mark.parametrize(
    "table",
    [{"alice": ["python"]}, {ALICE: "python"}, {ALICE: [""]}, {ALICE: [3]}, {"*": None}],
)
def test_bad_policy_tables_are_refused(table: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        ExecutionPolicy.from_config(table)


def test_policy_and_admins_survive_a_config_round_trip(tmp_path: Path) -> None:
    cfg = AgentConfig(
        name="a",
        mesh="m",
        listen="127.0.0.1:0",
        admins=[ALICE],
        policy={ALICE: ["python"], "*": ["*", "functions"]},
    )
    cfg.save(tmp_path / "config.toml")
    back = AgentConfig.load(tmp_path / "config.toml")
    assert back.admins == [ALICE]
    assert back.policy == {ALICE: ["python"], "*": ["*", "functions"]}
    with pytest.raises(InvalidInput, match="admins"):
        AgentConfig(name="a", mesh="m", listen="127.0.0.1:0", admins=["alice"])
    with pytest.raises(InvalidInput, match="policy"):
        AgentConfig(name="a", mesh="m", listen="127.0.0.1:0", policy={"bob": ["shell"]})


def test_owners_and_access() -> None:
    alice = Caller.client(Identity.client("m", "alice"))
    assert owner_of(alice) == ALICE
    assert owner_of(Caller.local()) == LOCAL
    with pytest.raises(Unauthenticated):
        owner_of(Caller.anonymous())
    access = Access.of(alice, [])
    assert access.sees(ALICE) and not access.sees("spiffe://m/client/bob") and not access.sees("")
    assert access.scope == ALICE
    assert Access.of(alice, [ALICE]).scope is None
    assert Access.of(Caller.local(), []).admin
    assert wire_owner("m", "x", ALICE) == ALICE
    assert wire_owner("m", "x", LOCAL) == "spiffe://m/agent/x"
    assert wire_owner("m", "x", "") == "spiffe://m/agent/x"
