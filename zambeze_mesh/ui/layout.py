"""Server-side layout of a campaign's DAG for the web view.

Activities are placed left to right by topological generation (networkx) and
spread vertically inside their generation. Big campaigns are cut into pages of at
most ``page_size`` activities (whole generations where they fit; a generation longer
than a page fills the room left on the current page, then the next pages), so the
page draws a readable SVG at any size; edges are kept only between activities on
the same page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from zambeze_mesh.errors import InvalidInput

__all__ = ["DEFAULT_PAGE_SIZE", "Layout", "layout_dag"]

#: Activities drawn on one page of the DAG view.
DEFAULT_PAGE_SIZE = 300
#: A generation taller than this wraps into several columns.
MAX_ROWS = 25


@dataclass
class Layout:
    """Positions (grid units: columns by generation, a tall one wrapped) and pages.

    ``pages[i]`` lists the activity names drawn on page ``i``; ``pos[name]`` is its
    ``(column, row)`` on its page and ``page_of[name]`` that page; ``edges`` are
    ``(from, to)`` pairs between activities on the same page.
    """

    pos: dict[str, tuple[int, int]] = field(default_factory=dict)
    page_of: dict[str, int] = field(default_factory=dict)
    pages: list[list[str]] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly form: per page its nodes ``[name, col, row]`` and edges."""
        out: list[dict[str, Any]] = []
        for names in self.pages:
            out.append({"nodes": [[n, *self.pos[n]] for n in names], "edges": []})
        for u, v in self.edges:
            out[self.page_of[u]]["edges"].append([u, v])
        for page in out:
            page["cols"] = 1 + max((c for _, c, _ in page["nodes"]), default=0)
            page["rows"] = 1 + max((r for _, _, r in page["nodes"]), default=0)
        return {"pages": out}


def layout_dag(
    names: Sequence[str],
    depends_on: Mapping[str, Sequence[str]],
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Layout:
    """Lay out activities ``names`` (submission order) with their predecessors.

    Unknown predecessors are ignored. Raises :class:`InvalidInput` on a cycle or a
    page size below 1.
    """
    if page_size < 1:
        raise InvalidInput("page_size must be at least 1")
    index = {n: i for i, n in enumerate(names)}
    g: nx.DiGraph = nx.DiGraph()
    g.add_nodes_from(names)
    for n in names:
        g.add_edges_from((p, n) for p in depends_on.get(n, ()) if p in index and p != n)
    try:
        generations = [sorted(gen, key=index.__getitem__) for gen in nx.topological_generations(g)]
    except nx.NetworkXUnfeasible:
        raise InvalidInput("the campaign's dependencies form a cycle") from None
    out = Layout()
    page: list[str] = []
    col = 0

    def close_page() -> None:
        nonlocal page, col
        if page:
            out.pages.append(page)
        page, col = [], 0

    for gen in generations:
        if page and len(page) + len(gen) > page_size and len(gen) <= page_size:
            close_page()  # a generation that fits a page is kept whole
        i = 0
        while i < len(gen):
            if len(page) == page_size:
                close_page()
            chunk = gen[i : i + page_size - len(page)]  # a long one fills the room left
            for j, name in enumerate(chunk):
                out.pos[name] = (col + j // MAX_ROWS, j % MAX_ROWS)
                out.page_of[name] = len(out.pages)
                page.append(name)
            col += (len(chunk) + MAX_ROWS - 1) // MAX_ROWS
            i += len(chunk)
    close_page()
    out.edges = [(u, v) for u, v in g.edges if out.page_of[u] == out.page_of[v]]
    return out
