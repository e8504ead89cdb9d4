"""Matching activities to agents, and contractor bids."""

from __future__ import annotations

import pytest

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.scheduling.bidding import TenderKey, estimate_bid
from zambeze_mesh.scheduling.matching import candidates, fits, no_candidates_message
from zambeze_mesh.scheduling.model import ActivityDef, AgentInfo, Requirements, activity_from_spec
from zambeze_mesh.v1 import common_pb2


def agent(name: str, **kw: object) -> AgentInfo:
    base: dict[str, object] = {
        "plugins": {"shell", "python"},
        "cpus": 4,
        "memory_bytes": 8 << 30,
        "slots": 2,
        "free_slots": 2,
        "transfer_methods": ("grpc-stream",),
    }
    base.update(kw)
    return AgentInfo(name=name, **base)  # type: ignore[arg-type]


def shell(**kw: object) -> ActivityDef:
    return ActivityDef(name="job", kind="shell", **kw)  # type: ignore[arg-type]


def test_plain_fit() -> None:
    assert fits(shell(), agent("a")) is None


def test_dead_agents_do_not_fit() -> None:
    assert fits(shell(), agent("a", status="DEAD")) == "agent is dead"
    assert fits(shell(), agent("a", status="LEFT")) == "agent is left"
    assert fits(shell(), agent("a", status="SUSPECT")) is None


def test_plugin_labels_pins_and_resources() -> None:
    wf = ActivityDef(name="w", kind="workflow", plugin="dask")
    assert fits(wf, agent("a")) == "no plugin 'dask'"
    assert fits(wf, agent("a", plugins={"dask"})) is None
    need = shell(
        requires=Requirements(labels={"role": "hpc"}, cpus=8, gpus=1, memory_bytes=32 << 30)
    )
    assert fits(need, agent("a")) == "label role=hpc not matched"
    assert fits(need, agent("a", labels={"role": "edge"})) == "label role=hpc not matched"
    assert fits(need, agent("a", labels={"role": "hpc"})) == "needs 8 cpus, has 4"
    assert fits(need, agent("a", labels={"role": "hpc"}, cpus=8)) == "needs 1 gpus, has 0"
    reason = fits(need, agent("a", labels={"role": "hpc"}, cpus=8, gpus=1))
    assert reason == "needs 32.0 GiB memory, has 8.0 GiB"
    assert (
        fits(need, agent("a", labels={"role": "hpc"}, cpus=8, gpus=1, memory_bytes=64 << 30))
        is None
    )
    pinned = shell(agent="x")
    assert fits(pinned, agent("a")) == "pinned to agent x"
    assert fits(pinned, agent("x")) is None
    assert fits(shell(), agent("a", slots=0)) == "has no slots"


def test_functions_need_accept_functions() -> None:
    spec = common_pb2.ActivitySpec(name="f", python=common_pb2.PythonSpec(function=b"pickled"))
    fn = activity_from_spec(spec)
    assert fits(fn, agent("a")) == "does not accept functions"
    assert fits(fn, agent("a", accept_functions=True)) is None
    script = activity_from_spec(
        common_pb2.ActivitySpec(name="s", python=common_pb2.PythonSpec(script_uri="A://s.py"))
    )
    assert fits(script, agent("a")) is None


def test_transfer_runs_at_destination() -> None:
    tr = activity_from_spec(
        common_pb2.ActivitySpec(
            name="t", transfer=common_pb2.TransferSpec(source="A://x", dest="B://y")
        )
    )
    assert fits(tr, agent("A")) == "transfer destination is agent B"
    assert fits(tr, agent("B")) is None
    assert fits(tr, agent("B", transfer_methods=())) == "no plugin 'transfer'"


def test_candidates_and_message() -> None:
    wf = ActivityDef(
        name="w", kind="workflow", plugin="dask", requires=Requirements(labels={"role": "hpc"})
    )
    agents = [
        agent("a"),
        agent("b", plugins={"dask"}),
        agent("c", plugins={"dask"}, labels={"role": "hpc"}),
        agent("d", plugins={"dask"}, labels={"role": "hpc"}, status="DEAD"),
    ]
    ok, reasons = candidates(wf, agents)
    assert [x.name for x in ok] == ["c"]
    assert reasons == {
        "a": "no plugin 'dask'",
        "b": "label role=hpc not matched",
        "d": "agent is dead",
    }
    msg = no_candidates_message(wf, reasons)
    assert msg.startswith("activity 'w': no agent offers plugin 'dask' with labels {role=hpc}")
    assert "a: no plugin 'dask'" in msg and "b: label role=hpc not matched" in msg
    many = {f"n{i:02d}": "no plugin 'dask'" for i in range(20)}
    assert "12 more" in no_candidates_message(wf, many)
    assert "no live members" in no_candidates_message(wf, {})


def test_estimate_bid_components() -> None:
    key = TenderKey("c1", "job", 1)
    idle = estimate_bid(shell(), key=key, avg_runtime_s=2.0)
    assert not idle.refused and idle.key == key
    assert idle.estimate_s == pytest.approx(2.0) and idle.queue_wait_s == 0
    busy = estimate_bid(shell(), queue_len=3, free_slots=0, slots=2, avg_runtime_s=2.0)
    assert busy.queue_wait_s == pytest.approx(4.0)  # 4 ahead of completion / 2 slots * 2 s
    assert busy.estimate_s == pytest.approx(6.0)
    data = estimate_bid(shell(), avg_runtime_s=1.0, missing_inputs_bytes=500, bandwidth_bps=100)
    assert data.transfer_s == pytest.approx(5.0) and data.estimate_s == pytest.approx(6.0)
    assert busy.estimate_s > idle.estimate_s
    unknown_bw = estimate_bid(shell(), missing_inputs_bytes=100_000_000, bandwidth_bps=0)
    assert unknown_bw.transfer_s == pytest.approx(1.0)


def test_estimate_bid_refusals() -> None:
    wf = ActivityDef(name="w", kind="workflow", plugin="dask")
    bid = estimate_bid(wf, agent=agent("a"))
    assert bid.refused and bid.reason == "no plugin 'dask'"
    assert estimate_bid(shell(), slots=0).reason == "has no slots"
    with pytest.raises(InvalidInput):
        estimate_bid(shell(), avg_runtime_s=-1)
    with pytest.raises(InvalidInput):
        estimate_bid(shell(), queue_len=-1)
