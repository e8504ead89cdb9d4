"""The campaign table (pure), the tracker, and the live display paths."""

from __future__ import annotations

import io
import sys
import threading
import types
from typing import Any

import pytest
from rich.console import Console

from zambeze_mesh.campaign import live
from zambeze_mesh.campaign.tracker import ActivityRow, CampaignSnapshot, Tracker
from zambeze_mesh.campaign.view import build_table, format_age
from zambeze_mesh.campaign.wire import Event


def render(snap: CampaignSnapshot, now_ms: int) -> str:
    out = io.StringIO()
    Console(file=out, width=140).print(build_table(snap, now_ms))
    return out.getvalue()


def snap(**kw: Any) -> CampaignSnapshot:
    base: dict[str, Any] = {
        "name": "My Science Campaign!",
        "campaign_id": "c9",
        "state": "RUNNING",
        "message": "",
        "last_seq": 4,
        "rows": (
            ActivityRow("sim", "SUCCEEDED", 1, "edge", "", 1_000, {"exit_code": "0"}),
            ActivityRow("train", "RUNNING", 2, "hpc", "", 10_000),
            ActivityRow("check", "FAILED", 1, "cluster", "exit code 3\nmore lines"),
            ActivityRow("store"),
        ),
        "started_unix_ms": 1_000,
    }
    base.update(kw)
    return CampaignSnapshot(**base)


def test_table_shows_every_activity_with_state_agent_attempt_and_info() -> None:
    text = render(snap(), now_ms=22_500)
    assert "My Science Campaign!" in text and "[c9]" in text and "21.5s" in text
    lines = {ln.split("│")[1].strip(): ln for ln in text.splitlines() if ln.count("│") >= 5}
    assert "SUCCEEDED" in lines["sim"] and "edge" in lines["sim"] and "exit code 0" in lines["sim"]
    assert "RUNNING" in lines["train"] and " 2 " in lines["train"] and "for 12.5s" in lines["train"]
    assert "exit code 3" in lines["check"] and "more lines" not in text
    assert "PENDING" in lines["store"] and "-" in lines["store"]
    assert "1 failed" in text and "1 pending" in text and "1 running" in text


@pytest.mark.parametrize(("ms", "text"), [(1500, "1.5s"), (125_000, "2m05s"), (7_260_000, "2h01m")])
def test_format_age(ms: int, text: str) -> None:
    assert format_age(ms) == text


def test_tracker_applies_events_and_reports_final_once() -> None:
    tr = Tracker("c", ["a", "b"])
    tr.submitted("c1")
    assert tr.apply(Event(1, "c1", "", "", campaign_state="RUNNING", time_unix_ms=5)) is None
    assert tr.apply(Event(2, "c1", "a", "RUNNING", attempt=1, agent="x")) is None
    row = tr.apply(Event(3, "c1", "a", "SUCCEEDED", attempt=1, agent="x", result=b"r"))
    assert row is not None and row.final and row.result == b"r" and row.agent == "x"
    assert tr.apply(Event(4, "c1", "a", "SUCCEEDED", attempt=1)) is None  # already final
    s = tr.snapshot()
    assert s.states == {"a": "SUCCEEDED", "b": "PENDING"} and s.last_seq == 4
    assert s.started_unix_ms == 5 and not s.final
    tr.apply(Event(5, "c1", "", "", campaign_state="SUCCEEDED"))
    assert tr.snapshot().final


def test_show_live_in_a_notebook_updates_one_output(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []

    class Handle:
        def update(self, obj: Any) -> None:
            shown.append(obj.data)

    class HTML:
        def __init__(self, data: str) -> None:
            self.data = data

    def display(obj: Any, display_id: bool = False) -> Handle:
        assert display_id
        shown.append(obj.data)
        return Handle()

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())  # type: ignore[attr-defined]
    display_mod = types.ModuleType("IPython.display")
    display_mod.HTML = HTML  # type: ignore[attr-defined]
    display_mod.display = display  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    assert live.in_jupyter()

    done = threading.Event()
    states = iter(["RUNNING", "RUNNING", "SUCCEEDED"])

    def snapshot() -> CampaignSnapshot:
        st = next(states, "SUCCEEDED")
        if st == "SUCCEEDED":
            done.set()
        return snap(state=st)

    assert live.show_live(snapshot, done, refresh=0.01) is True
    assert len(shown) >= 2 and all("<pre" in h for h in shown)
    assert "SUCCEEDED" in shown[-1] and "train" in shown[-1]


def test_show_live_times_out() -> None:
    out = io.StringIO()
    done = threading.Event()
    assert (
        live.show_live(snap, done, refresh=0.01, console=Console(file=out), timeout=0.05) is False
    )
    assert "My Science Campaign!" in out.getvalue()


def test_not_in_jupyter_without_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert not live.in_jupyter()
