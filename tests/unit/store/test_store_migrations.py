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
