"""Faults of an agent's environment: a read-only data disk and a skewed wall clock."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.system.faults import (
    PORT,
    WORKER,
    AgentPlan,
    S,
    check_journal,
    check_runs,
    follow,
    lab_mesh,
    marked,
    run,
    submit,
    token,
    views,
)
from tests.system.netns import faketime_lib, skew_env

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _integrity(home: Path) -> str:
    db = sqlite3.connect(home / "zmesh.db")
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def test_read_only_data_dir_fails_clearly_and_work_moves_on(tmp_path: Path) -> None:
    """Injects: the data dir (@agentdir) of worker n1 is a read-only bind mount inside
    n1's own mount namespace (root ignores file modes, so chmod would not do).

    Checks: an activity pinned to n1 FAILS with a message naming the read-only file system
    and the campaign FAILS with that message; a campaign of 6 activities that may run on
    either worker (retries=2) SUCCEEDS, every attempt that landed on n1 failed with the
    same clear message and its retry went to the other worker (n1 fails fast, so it looks
    idle and wins the first bids); nothing is written under n1's data dir,
    its database passes integrity_check and it stays alive in every view.
    """
    markers = tmp_path / "markers"
    plans = [AgentPlan(worker=False), AgentPlan(readonly_data=True), AgentPlan()]
    with lab_mesh(tmp_path, plans) as (_, agents):
        monitor, broken, _good = agents
        cid = run(submit(monitor, "pinned", [marked(markers, "p", "true", agent=broken.name)]))
        run(follow(monitor, cid))
        st, events = run(check_journal(monitor, cid))
        assert st.state == S.CAMPAIGN_STATE_FAILED, st
        assert "Read-only file system" in st.activities[0].message, st.activities[0]
        assert "Read-only file system" in st.message, st.message

        acts = [marked(markers, f"a{i}", "true", requires=WORKER, retries=2) for i in range(6)]
        cid = run(submit(monitor, "spread", acts))
        run(follow(monitor, cid))
        st, events = run(check_journal(monitor, cid))
        assert st.state == S.CAMPAIGN_STATE_SUCCEEDED, st
        retried = [e for e in events if e.state == S.ACTIVITY_STATE_RETRYING]
        for e in retried:  # the monitor journals a failed attempt as RETRYING
            assert e.agent == broken.name and "Read-only file system" in e.message, e
        assert {e.attempt for e in retried} <= {2}, "a retry went back to the broken agent"
        assert all(a.agent != broken.name for a in st.activities)
        check_runs(markers, st, events)
        assert not any(
            e.state == S.ACTIVITY_STATE_RUNNING and e.agent == broken.name for e in events
        )

        assert list(broken.data_dir.iterdir()) == [], "something was written to the read-only dir"
        assert _integrity(broken.home) == "ok"
        assert all(v.get(broken.name) == "alive" for v in views(agents).values())


@pytest.mark.skipif(faketime_lib() is None, reason="libfaketime missing (apt-get install faketime)")
def test_clock_skew_leaves_membership_and_campaigns_alone(tmp_path: Path) -> None:
    """Injects: worker n2 runs (join and agent) under libfaketime with its wall clock 5 s
    ahead (CLOCK_REALTIME only; monotonic time is untouched, as with a host off NTP);
    then a fourth agent 400 s ahead tries to join.

    Checks: n2's join proof is accepted (skew within the 300 s tolerance) and the mesh
    converges; for the whole campaign nobody is ever seen suspect or dead (SWIM timers
    run on the monotonic clock); a campaign of 6 activities, half pinned to n2, SUCCEEDS
    with every activity run once; the 400-s-ahead joiner is refused with a message saying
    its clock is off, and is never admitted.
    """
    markers = tmp_path / "markers"
    plans = [AgentPlan(worker=False), AgentPlan(), AgentPlan(env=skew_env("+5s")), AgentPlan()]
    plans[3].join = False
    with lab_mesh(tmp_path, plans) as (lab, agents):
        monitor, _, skewed, late = agents
        names = [a.name for a in agents[:3]]
        acts = [
            marked(markers, f"a{i}", "sleep 0.5", requires=WORKER,
                   **({"agent": skewed.name} if i % 2 else {}))
            for i in range(6)
        ]  # fmt: skip
        cid = run(submit(monitor, "skew", acts))
        samples: list[dict[str, dict[str, str]]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(views(agents[:3]))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            run(follow(monitor, cid))
            time.sleep(3)
        finally:
            done.set()
            sampler.join()
        st, events = run(check_journal(monitor, cid))
        assert st.state == S.CAMPAIGN_STATE_SUCCEEDED, st
        assert {a.agent for a in st.activities if a.name in ("a1", "a3", "a5")} == {skewed.name}
        lines = check_runs(markers, st, events)
        assert len([ln for ln in lines if ln[0] == "start"]) == 6
        assert len(samples) > 5
        flaps = [
            (viewer, m, s)
            for snap in samples
            for viewer, v in snap.items()
            for m, s in v.items()
            if m in names and s != "alive"
        ]
        assert not flaps, f"members seen not alive with a skewed clock: {flaps[:5]}"

        late.env = skew_env("+400s")
        argv = ("join", monitor.address, "--token", token(monitor), "--name", late.name,
                "--listen", late.address)  # fmt: skip
        proc = late.popen(*argv)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode != 0, out
        assert "clock is +40" in err and "s off" in err, err
        assert late.name not in views([monitor])[monitor.name]
        assert lab.address(3) + f":{PORT}" == late.address
