"""DAG layout of the web view: generations, wrapping, pages."""

from __future__ import annotations

import pytest

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.ui.layout import MAX_ROWS, layout_dag


def test_diamond_by_generation() -> None:
    deps = {"left": ["top"], "right": ["top"], "bottom": ["left", "right"]}
    lay = layout_dag(["top", "left", "right", "bottom"], deps)
    assert lay.pos == {"top": (0, 0), "left": (1, 0), "right": (1, 1), "bottom": (2, 0)}
    assert lay.pages == [["top", "left", "right", "bottom"]]
    assert sorted(lay.edges) == [
        ("left", "bottom"),
        ("right", "bottom"),
        ("top", "left"),
        ("top", "right"),
    ]
    page = lay.to_json()["pages"][0]
    assert (page["cols"], page["rows"]) == (3, 2)


def test_tall_generation_wraps_into_columns() -> None:
    names = [f"a{i}" for i in range(MAX_ROWS + 3)]
    lay = layout_dag([*names, "sink"], {"sink": names})
    assert lay.pos["a0"] == (0, 0)
    assert lay.pos[f"a{MAX_ROWS}"] == (1, 0)
    assert lay.pos["sink"] == (2, 0)  # after both columns of its predecessors


def test_big_campaign_is_paginated_with_every_activity_once() -> None:
    names = [f"t{i}" for i in range(2000)]
    deps = {f"t{i}": [f"t{i - 1000}"] for i in range(1000, 2000)}
    lay = layout_dag(names, deps, page_size=300)
    assert all(len(p) <= 300 for p in lay.pages)
    placed = [n for p in lay.pages for n in p]
    assert sorted(placed) == sorted(names)
    assert all(lay.page_of[u] == lay.page_of[v] for u, v in lay.edges)
    assert lay.page_of["t0"] < lay.page_of["t1999"]


def test_unknown_predecessors_ignored_and_cycles_refused() -> None:
    assert layout_dag(["x"], {"x": ["ghost"]}).edges == []
    with pytest.raises(InvalidInput, match="cycle"):
        layout_dag(["x", "y"], {"x": ["y"], "y": ["x"]})
    with pytest.raises(InvalidInput):
        layout_dag(["x"], {}, page_size=0)


def test_first_page_is_filled_when_a_generation_is_longer_than_a_page() -> None:
    fan = [f"t{i}" for i in range(1000)]
    lay = layout_dag(["start", *fan], {n: ["start"] for n in fan}, page_size=300)
    assert [len(p) for p in lay.pages] == [300, 300, 300, 101]
    assert lay.pages[0][0] == "start" and lay.pos["t0"] == (1, 0)
    assert ("start", "t0") in lay.edges and ("start", "t299") not in lay.edges
