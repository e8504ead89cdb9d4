"""``zmesh status CAMPAIGN --graph FILE``: a picture of a campaign's DAG.

Nodes are the activities, colored by state and labelled with the agent that ran
them; edges come from ``depends_on`` and output references, exactly as the
monitor builds the DAG (:class:`~zambeze_mesh.scheduling.dag.CampaignDag` over the
submitted specs, which the campaign's monitor returns through the ``Campaigns`` API
(``GetProvenance``)); without specs only the activities are drawn.

Needs matplotlib (the ``viz`` extra); networkx is a core dependency.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zambeze_mesh.errors import FailedPrecondition, InvalidInput

if TYPE_CHECKING:
    from zambeze_mesh.campaign.wire import CampaignStatus
    from zambeze_mesh.v1 import common_pb2

#: Fill color of a node per activity state.
STATE_COLORS: Mapping[str, str] = {
    "SUCCEEDED": "#4caf50",
    "RUNNING": "#2196f3",
    "STAGING": "#03a9f4",
    "QUEUED": "#9c27b0",
    "PENDING": "#bdbdbd",
    "FAILED": "#f44336",
    "CANCELLED": "#795548",
    "SKIPPED": "#ff9800",
}
_DEFAULT_COLOR = "#e0e0e0"


@dataclass(frozen=True)
class Node:
    """One activity to draw."""

    name: str
    state: str
    agent: str = ""
    kind: str = ""


def dag_edges(
    specs: Sequence[common_pb2.ActivitySpec],
) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Kinds per activity and edges ``(from, to, via)`` of the campaign's DAG.

    Edges from the monitor node are left out (they only say "no dependency"). The
    API leaves shipped functions out of the specs; a stand-in takes their place (the
    DAG does not depend on a function's bytes).
    """
    from zambeze_mesh.scheduling.dag import CampaignDag
    from zambeze_mesh.scheduling.model import MONITOR, activity_from_spec

    acts = [activity_from_spec(_with_function(s)) for s in specs]
    dag = CampaignDag(acts)
    kinds = {a.name: str(a.kind) for a in acts}
    edges = [
        (str(u), str(v), str(d.get("via", "")))
        for u, v, d in dag.graph.edges(data=True)
        if u != MONITOR
    ]
    return kinds, edges


def _with_function(spec: common_pb2.ActivitySpec) -> common_pb2.ActivitySpec:
    if not spec.HasField("python") or spec.python.function or spec.python.script_uri:
        return spec
    filled = type(spec)()
    filled.CopyFrom(spec)
    filled.python.function = b"function left out"
    return filled


def _layout(
    names: Sequence[str], edges: Sequence[tuple[str, str, str]]
) -> dict[str, tuple[float, float]]:
    """Left-to-right layers by longest path; nodes of a layer spread vertically."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(names)
    g.add_edges_from((u, v) for u, v, _ in edges)
    layer: dict[str, int] = {}
    for n in nx.topological_sort(g):
        layer[n] = max((layer[p] + 1 for p in g.predecessors(n)), default=0)
    by_layer: dict[int, list[str]] = {}
    for n in names:
        by_layer.setdefault(layer[n], []).append(n)
    pos: dict[str, tuple[float, float]] = {}
    for x, members in by_layer.items():
        for i, n in enumerate(members):
            pos[n] = (float(x), (len(members) - 1) / 2.0 - i)
    return pos


def draw(
    nodes: Sequence[Node],
    edges: Sequence[tuple[str, str, str]],
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Render the DAG to ``path`` (format from its suffix: .png, .svg, .pdf)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import FancyBboxPatch, Patch
    except ImportError:
        raise FailedPrecondition(
            "drawing a graph needs matplotlib: pip install 'zambeze-mesh[viz]'"
        ) from None
    if not nodes:
        raise InvalidInput("the campaign has no activities to draw")
    names = [n.name for n in nodes]
    known = set(names)
    edges = [e for e in edges if e[0] in known and e[1] in known]
    pos = _layout(names, edges)
    width = max(x for x, _ in pos.values()) + 1
    height = max(abs(y) for _, y in pos.values()) * 2 + 1
    fig, ax = plt.subplots(figsize=(max(6.0, 3.2 * width), max(2.8, 1.6 * height + 1.2)))
    box_w, box_h = 0.7, 0.5
    for u, v, via in edges:
        (x0, y0), (x1, y1) = pos[u], pos[v]
        ax.annotate(
            "",
            xy=(x1 - box_w / 2 - 0.03, y1),
            xytext=(x0 + box_w / 2 + 0.03, y0),
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#555555",
                "linestyle": "--" if via == "depends_on" else "-",
                "shrinkA": 0,
                "shrinkB": 0,
            },
        )
    for n in nodes:
        x, y = pos[n.name]
        color = STATE_COLORS.get(n.state, _DEFAULT_COLOR)
        ax.add_patch(
            FancyBboxPatch(
                (x - box_w / 2, y - box_h / 2),
                box_w,
                box_h,
                boxstyle="round,pad=0.02",
                facecolor=color,
                edgecolor="#333333",
            )
        )
        sub = " · ".join(s for s in (n.kind, n.agent and f"on {n.agent}") if s)
        ax.text(x, y + 0.07, n.name, ha="center", va="center", fontsize=9, weight="bold", wrap=True)
        ax.text(x, y - 0.12, sub or n.state, ha="center", va="center", fontsize=8)
    used = sorted({n.state for n in nodes})
    ax.legend(
        handles=[Patch(color=STATE_COLORS.get(s, _DEFAULT_COLOR), label=s) for s in used],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=max(1, len(used)),
        fontsize=8,
        frameon=False,
    )
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-height / 2 - 0.1, height / 2 + 0.1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def campaign_graph(
    status: CampaignStatus,
    specs: Sequence[common_pb2.ActivitySpec],
    path: str | os.PathLike[str],
) -> Path:
    """Draw the campaign ``status``, with the edges of its activity ``specs``."""
    kinds, edges = dag_edges(specs) if specs else ({}, [])
    nodes = [Node(a.name, a.state, a.agent, kinds.get(a.name, "")) for a in status.activities]
    title = f"{status.name} ({status.campaign_id}): {status.state}"
    return draw(nodes, edges, path, title)
