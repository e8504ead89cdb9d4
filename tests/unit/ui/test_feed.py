"""Membership rows of the web view: when each member last changed."""

from __future__ import annotations

from zambeze_mesh.campaign.wire import Member, Members
from zambeze_mesh.ui.feed import MemberTracker


def members(**status: tuple[str, int]) -> Members:
    return Members(
        members=tuple(
            Member(name=n, address="127.0.0.1:1", status=s, incarnation=i, is_self=n == "a")
            for n, (s, i) in status.items()
        ),
        self_name="a",
        mesh="m",
    )


def test_last_change_follows_status_and_incarnation() -> None:
    now = [100.0]
    tracker = MemberTracker(clock=lambda: now[0])

    def changed() -> dict[str, float | None]:
        rows = tracker.rows(members(**view))["members"]
        return {r["name"]: r["changed"] for r in rows}

    view = {"a": ("ALIVE", 1), "b": ("ALIVE", 1)}
    assert changed() == {"a": None, "b": None}  # first sight: no change seen yet
    now[0] = 105.0
    view = {"a": ("ALIVE", 1), "b": ("DEAD", 1)}
    assert changed() == {"a": None, "b": 105.0}
    now[0] = 107.0
    view = {"a": ("ALIVE", 2), "b": ("DEAD", 1), "c": ("ALIVE", 1)}
    assert changed() == {"a": 107.0, "b": 105.0, "c": None}
    rows = tracker.rows(members(**view))["members"]
    assert [r["status"] for r in rows] == ["alive", "dead", "alive"]
