"""Campaign DAG: validation, readiness, skip propagation and final state."""

from __future__ import annotations

import pytest

from zambeze_mesh.errors import InvalidInput, NotFound, ResourceExhausted
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.scheduling.dag import CampaignDag
from zambeze_mesh.scheduling.model import MONITOR, ActivityDef, activity_from_spec
from zambeze_mesh.v1 import common_pb2


def act(name: str, *deps: str, data: tuple[str, ...] = ()) -> ActivityDef:
    return ActivityDef(name=name, kind="shell", depends_on=deps, data_uris=data)


def diamond() -> CampaignDag:
    return CampaignDag([act("a"), act("b", "a"), act("c", "a"), act("d", "b", "c")])


def test_diamond_is_valid_with_monitor_in_front() -> None:
    dag = diamond()
    assert len(dag) == 4 and "a" in dag and MONITOR not in dag
    order = dag.topological_order()
    assert order[0] == "a" and order[-1] == "d" and set(order) == {"a", "b", "c", "d"}
    assert dag.roots() == ["a"]
    g = dag.graph
    assert g.has_edge(MONITOR, "a") and not g.has_edge(MONITOR, "b")
    assert dag.predecessors("d") == ["b", "c"]
    assert dag.successors("a") == ["b", "c"]
    assert dag.dependants("a") == ["b", "c", "d"]
    assert dag.dependants("d") == []


def test_independent_activities_all_hang_off_the_monitor() -> None:
    dag = CampaignDag([act("x"), act("y"), act("z", "x")])
    assert dag.roots() == ["x", "y"]
    assert dag.topological_order() == ["x", "y", "z"]  # submission order kept


def test_cycle_reports_names() -> None:
    with pytest.raises(InvalidInput, match="cycle") as info:
        CampaignDag([act("a", "c"), act("b", "a"), act("c", "b"), act("free")])
    msg = str(info.value)
    for name in ("a", "b", "c"):
        assert repr(name)[1:-1] in msg
    assert "free" not in msg


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(InvalidInput, match="cycle: a -> a"):
        CampaignDag([act("a", "a")])


def test_output_ref_cycle_detected() -> None:
    with pytest.raises(InvalidInput, match="cycle"):
        CampaignDag([act("a", data=("@output:b",)), act("b", "a")])


def test_unknown_references() -> None:
    with pytest.raises(InvalidInput, match="'b' depends on unknown activity 'ghost'"):
        CampaignDag([act("a"), act("b", "ghost")])
    with pytest.raises(InvalidInput, match="'b' uses the output of unknown activity 'ghost'"):
        CampaignDag([act("a"), act("b", data=("@output:ghost/sub",))])


def test_duplicates_and_limits() -> None:
    with pytest.raises(InvalidInput, match="duplicate activity names: a"):
        CampaignDag([act("a"), act("b"), act("a")])
    with pytest.raises(InvalidInput, match="no activities"):
        CampaignDag([])
    with pytest.raises(ResourceExhausted):
        CampaignDag([act(f"a{i}") for i in range(10_001)])


def test_output_refs_create_edges() -> None:
    spec = common_pb2.ActivitySpec(
        name="analyze",
        python=common_pb2.PythonSpec(script_uri="A://an.py", args=["--frames=@output:sim/frames"]),
        data_uris=["@output:calib"],
    )
    dag = CampaignDag([act("sim"), act("calib"), activity_from_spec(spec)])
    assert dag.predecessors("analyze") == ["sim", "calib"]
    assert dag.graph.edges["sim", "analyze"]["via"] == "output"
    assert dag.roots() == ["sim", "calib"]
    assert dag.ready({}) == ["sim", "calib"]


def test_ready_follows_successes() -> None:
    dag = diamond()
    assert dag.ready({}) == ["a"]
    s = {"a": st.RUNNING}
    assert dag.ready(s) == []
    s["a"] = st.SUCCEEDED
    assert dag.ready(s) == ["b", "c"]
    assert dag.unblocked_by("a", s) == ["b", "c"]
    s["b"] = st.SUCCEEDED
    assert dag.ready(s) == ["c"]
    assert dag.unblocked_by("b", s) == []  # d still waits for c
    s["c"] = st.SUCCEEDED
    assert dag.ready(s) == ["d"]
    assert dag.unblocked_by("c", s) == ["d"]
    s["d"] = st.BIDDING
    assert dag.ready(s) == []


def test_failure_skips_descendants_and_final_state() -> None:
    dag = CampaignDag([act("a"), act("b", "a"), act("c", "a"), act("d", "b", "c"), act("e")])
    s = {"a": st.SUCCEEDED, "b": st.FAILED, "c": st.SUCCEEDED, "e": st.RUNNING}
    assert dag.on_failure("b") == ["d"]
    assert dag.on_failure("a", s) == ["d"]  # b and c are terminal already
    assert dag.on_failure("a") == ["b", "c", "d"]
    skip = dag.on_failure("b", s)
    assert skip == ["d"]
    for name in skip:
        s[name] = st.SKIPPED
    assert dag.final_state(s) == "RUNNING"  # e still running
    s["e"] = st.SUCCEEDED
    assert dag.final_state(s) == "FAILED"
    assert dag.ready(s) == []


def test_final_states() -> None:
    dag = diamond()
    assert dag.final_state({}) == "RUNNING"
    assert dag.final_state(dict.fromkeys("abcd", st.SUCCEEDED)) == "SUCCEEDED"
    cancelled = {"a": st.SUCCEEDED, "b": st.CANCELLED, "c": st.SUCCEEDED, "d": st.SKIPPED}
    assert dag.final_state(cancelled) == "CANCELLED"
    both = {"a": st.SUCCEEDED, "b": st.CANCELLED, "c": st.FAILED, "d": st.SKIPPED}
    assert dag.final_state(both) == "FAILED"


def test_unknown_name_lookups() -> None:
    dag = diamond()
    with pytest.raises(NotFound):
        dag.dependants("zz")
    with pytest.raises(NotFound):
        dag.activity("zz")
    assert dag.activity("a").name == "a"


def test_topological_order_matches_networkx_lexicographic_order() -> None:
    import random

    import networkx as nx

    from zambeze_mesh.scheduling.dag import _topological_order

    rng = random.Random(7)
    for _ in range(30):
        n = rng.randint(1, 40)
        g: nx.DiGraph = nx.DiGraph()
        names = [f"a{i}" for i in range(n)]
        rng.shuffle(names)
        g.add_nodes_from(names)
        for i in range(n):
            for j in range(i + 1, n):
                if rng.random() < 0.1:
                    g.add_edge(names[i], names[j])
        index = {name: rng.randint(0, 5) * 100 + k for k, name in enumerate(names)}
        want = list(nx.lexicographical_topological_sort(g, key=index.__getitem__))
        assert _topological_order(g, index) == want
