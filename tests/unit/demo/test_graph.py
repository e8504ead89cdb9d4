"""zmesh status --graph: DAG edges from the specs and the rendered picture."""

from __future__ import annotations

from pathlib import Path

import pytest

import zambeze_mesh as zm
from zambeze_mesh.campaign.wire import ActivityStatus, CampaignStatus
from zambeze_mesh.cli.graph import Node, dag_edges, draw
from zambeze_mesh.errors import InvalidInput


def _specs() -> list[object]:
    a = zm.ShellActivity("create microscope images", cmd="true")
    b = zm.WFActivity("train ml models", wf_manager="dask", wf_uri="hpc://t.py", data_uris=[a])
    c = zm.PythonActivity("model validation", script_uri="c://m.py", data_uris=[b.output_dir])
    d = zm.TransferActivity("store best models", source=c, dest="repo://x")
    e = zm.ShellActivity("notify", cmd="true", depends_on=[d])
    return [x.to_spec() for x in (a, b, c, d, e)]


def test_edges_follow_outputs_and_depends_on() -> None:
    kinds, edges = dag_edges(_specs())  # type: ignore[arg-type]
    assert kinds["train ml models"] == "workflow" and kinds["store best models"] == "transfer"
    assert sorted(edges) == [
        ("create microscope images", "train ml models", "output"),
        ("model validation", "store best models", "output"),
        ("store best models", "notify", "depends_on"),
        ("train ml models", "model validation", "output"),
    ]


def test_draw_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (viz extra)")
    kinds, edges = dag_edges(_specs())  # type: ignore[arg-type]
    states = ["SUCCEEDED", "SUCCEEDED", "FAILED", "SKIPPED", "PENDING"]
    nodes = [
        Node(name, state, agent="a1", kind=kinds[name])
        for name, state in zip(kinds, states, strict=True)
    ]
    out = draw(nodes, edges, tmp_path / "sub" / "dag.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(InvalidInput):
        draw([], [], tmp_path / "empty.png")


def test_campaign_graph_without_specs_draws_nodes_only(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (viz extra)")
    from zambeze_mesh.cli.graph import campaign_graph

    status = CampaignStatus(
        campaign_id="c1",
        name="demo",
        state="RUNNING",
        activities=(ActivityStatus("x", "RUNNING", agent="a1"),),
    )
    out = campaign_graph(status, [], tmp_path / "g.png")
    assert out.stat().st_size > 1000
