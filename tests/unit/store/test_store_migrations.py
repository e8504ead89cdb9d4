"""Schema migrations of the agent store run forward on an existing database."""

from __future__ import annotations

from pathlib import Path

import pytest

from zambeze_mesh.errors import ZmeshError
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.store.db import MIGRATIONS, Store
from zambeze_mesh.v1 import campaigns_pb2, common_pb2


def request(n: int) -> campaigns_pb2.SubmitRequest:
    acts = [
        common_pb2.ActivitySpec(name=f"a{i}", shell=common_pb2.ShellSpec(cmd="x" * 1000))
        for i in range(n)
    ]
    return campaigns_pb2.SubmitRequest(name="old", activities=acts)


def test_requests_move_out_of_the_campaign_rows(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    old = Store(path, migrations=MIGRATIONS[:2])  # a store written by the previous version
    req = request(50)
    with old.tx() as db:
        db.execute(
            "INSERT INTO campaigns (id, name, state, created_ms, request)"
            " VALUES ('c1', 'old', 'RUNNING', 1, ?)",
            (req.SerializeToString(),),
        )
        db.executemany(
            "INSERT INTO activities (campaign_id, name, state) VALUES ('c1', ?, 'PENDING')",
            [(a.name,) for a in req.activities],
        )
    old.close()

    store = Store(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert cstore.load_request(store, "c1") == req
        size = store.read("SELECT length(request) AS n FROM campaigns WHERE id = 'c1'")[0]["n"]
        assert size == 0
        assert [a.name for a in cstore.load_activities(store, "c1")] == [f"a{i}" for i in range(50)]
        # New campaigns keep the same split.
        with store.tx() as db:
            cstore.insert_campaign(db, "c2", request(3), 2, ["a0", "a1", "a2"])
        assert cstore.load_request(store, "c2") == request(3)
        assert cstore.load_request(store, "nope") is None
    finally:
        store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    Store(path).close()
    with pytest.raises(ZmeshError, match="upgrade zambeze-mesh"):
        Store(path, migrations=MIGRATIONS[:2])


def test_owners_and_monitor_keyed_contracts(tmp_path: Path) -> None:
    """Migration 4: old campaigns get the empty owner (admins only), open contracts
    survive with their monitor, and two monitors may hold the same attempt."""
    path = tmp_path / "agent.db"
    old = Store(path, migrations=MIGRATIONS[:3])
    with old.tx() as db:
        db.execute(
            "INSERT INTO campaigns (id, name, state, created_ms, client_request_id, request)"
            " VALUES ('c1', 'old', 'RUNNING', 1, 'rid', x'')"
        )
        db.execute(
            "INSERT INTO contracts (campaign_id, activity, attempt, monitor, item, state)"
            " VALUES ('c1', 'a', 1, 'm1', x'', 'RUNNING')"
        )
    old.close()

    store = Store(path)
    try:
        row = cstore.load_campaign(store, "c1")
        assert row is not None and row.owner == ""
        assert cstore.find_by_request_id(store, "rid") == "c1"
        assert cstore.find_by_request_id(store, "rid", "spiffe://m/client/x") is None
        assert cstore.contracts_open(store) == [("c1", "a", 1, "m1", b"")]
        with store.tx() as db:
            cstore.contract_put(db, "m2", "c1", "a", 1, b"x", "AWARDED")
            cstore.insert_campaign(db, "c2", request(1), 2, ["a0"], "spiffe://m/client/x")
        assert sorted(c[3] for c in cstore.contracts_open(store)) == ["m1", "m2"]
        assert [r.id for r in cstore.list_campaigns(store, 10, owner="spiffe://m/client/x")] == [
            "c2"
        ]
        assert {r.id for r in cstore.list_campaigns(store, 10)} == {"c1", "c2"}
    finally:
        store.close()
