"""Process faults across namespaces: kill -9 of a contractor, of the monitor, of a holder.

Every agent is a real ``zmesh`` process in its own network namespace on a bridge; the
test submits campaigns over the monitor's Unix socket, injects the fault when ``Watch``
shows the right moment, and checks the final state, the journal (``Watch`` from 0 is
seq 1..N with no gap or duplicate) and the marker file (no succeeded activity ran twice).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.system.faults import (
    WORKER,
    AgentPlan,
    S,
    check_journal,
    check_runs,
    follow,
    lab_mesh,
    marked,
    run,
    status,
    submit,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def outbox_len(home: Path) -> int:
    db = sqlite3.connect(home / "zmesh.db")
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


def test_contractor_killed_mid_activity_is_reawarded(tmp_path: Path) -> None:
    """Injects: kill -9 of the contractor while its activity is RUNNING.

    Checks: gossip declares it dead and the monitor re-awards the activity (attempt 2,
    another agent); the dependent activity then runs; the campaign SUCCEEDS; the killed
    attempt never ran to its end (its shell dies with the agent) and its late FAILED
    report, sent when the agent comes back, changes nothing.
    """
    markers = tmp_path / "markers"
    plans = [AgentPlan(worker=False), AgentPlan(), AgentPlan()]
    with lab_mesh(tmp_path, plans) as (_, agents):
        monitor = agents[0]
        by_name = {a.name: a for a in agents}
        acts = [
            marked(markers, "long", "sleep 3", requires=WORKER),
            marked(markers, "after", "true", requires=WORKER, depends_on=["long"]),
        ]
        cid = run(submit(monitor, "kill-contractor", acts))
        victim: list[str] = []

        def inject(ev: S.Event) -> None:
            if ev.activity == "long" and ev.state == S.ACTIVITY_STATE_RUNNING and not victim:
                victim.append(ev.agent)
                by_name[ev.agent].kill9()

        run(follow(monitor, cid, inject))
        st, events = run(check_journal(monitor, cid))
        assert st.state == S.CAMPAIGN_STATE_SUCCEEDED, st
        long = st.activities[0]
        assert victim and long.attempt == 2 and long.agent != victim[0], long
        assert any(
            e.activity == "long" and e.state == S.ACTIVITY_STATE_RETRYING and e.attempt == 2
            for e in events
        )
        time.sleep(3.5)  # the killed attempt's `sleep 3` would have ended by now
        check_runs(markers, st, events)

        by_name[victim[0]].start()
        deadline = time.monotonic() + 30
        while outbox_len(by_name[victim[0]].home) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert outbox_len(by_name[victim[0]].home) == 0, "restarted contractor never reported"
        again, _ = run(check_journal(monitor, cid))
        assert again.last_seq == st.last_seq and again.activities[0].attempt == 2


def test_monitor_killed_and_restarted_continues_from_journal(tmp_path: Path) -> None:
    """Injects: kill -9 of the monitor while the second of a 4-step chain RUNS; restart 1 s later.

    Checks: the restarted monitor resumes from its journal and the contractors' outboxes
    deliver what happened meanwhile; the campaign SUCCEEDS; a Watch resumed after the last
    seq seen before the crash and a Watch from 0 agree (seq 1..N, no gap, no duplicate);
    every activity ran exactly once.
    """
    markers = tmp_path / "markers"
    plans = [AgentPlan(worker=False), AgentPlan(), AgentPlan()]
    with lab_mesh(tmp_path, plans) as (_, agents):
        monitor = agents[0]
        acts = [
            marked(markers, f"s{i}", "sleep 1", requires=WORKER,
                   depends_on=[f"s{i - 1}"] if i else [])
            for i in range(4)
        ]  # fmt: skip
        cid = run(submit(monitor, "kill-monitor", acts))
        killed: list[int] = []

        def inject(ev: S.Event) -> None:
            if ev.activity == "s1" and ev.state == S.ACTIVITY_STATE_RUNNING and not killed:
                killed.append(ev.seq)
                monitor.kill9()

        before = run(follow(monitor, cid, inject))
        assert killed, "the campaign ended before the monitor could be killed"
        time.sleep(1.0)
        monitor.start()
        after = run(follow(monitor, cid, after=before[-1].seq))
        seqs = [e.seq for e in before + after]
        assert seqs == list(range(1, len(seqs) + 1)), seqs
        st, events = run(check_journal(monitor, cid))
        assert st.state == S.CAMPAIGN_STATE_SUCCEEDED, st
        assert events == before + after, "the resumed Watch and a replay from 0 differ"
        lines = check_runs(markers, st, events)
        assert sorted(n for k, n, _ in lines if k == "start") == [f"s{i}" for i in range(4)]


def test_holder_killed_mid_transfer_fetch_resumes(tmp_path: Path) -> None:
    """Injects: kill -9 of the agent holding a 48 MiB input while a contractor STAGES it
    (the holder's link is capped at 96 Mbit/s so staging lasts ~4 s); restart it at once.

    Checks: the contractor's fetch resumes from the bytes it already had (no byte received
    twice) and the staged copy has the right sha256; the activity SUCCEEDS on its first
    attempt; journal and markers as always.
    """
    markers = tmp_path / "markers"
    plans = [AgentPlan(worker=False), AgentPlan(worker=False), AgentPlan()]
    size = 48 * 2**20
    with lab_mesh(tmp_path, plans) as (lab, agents):
        monitor, holder, worker = agents
        blob = os.urandom(size)
        (holder.data_dir / "big.bin").write_bytes(blob)
        lab.shape(1, "96mbit")
        digest = hashlib.sha256(blob).hexdigest()
        body = f'test "$(sha256sum < "$ZMESH_INPUT_0" | cut -d" " -f1)" = {digest}'
        act = marked(
            markers, "use", body, agent=worker.name, data_uris=[f"{holder.name}://big.bin"]
        )
        cid = run(submit(monitor, "kill-holder", [act]))
        back_ms: list[float] = []

        def inject(ev: S.Event) -> None:
            if ev.state == S.ACTIVITY_STATE_STAGING and "fetching" in ev.message and not back_ms:
                time.sleep(1.0)
                holder.kill9()
                holder.start()
                back_ms.append(time.time() * 1000)

        run(follow(monitor, cid, inject))
        st, events = run(check_journal(monitor, cid))
        assert back_ms
        assert st.state == S.CAMPAIGN_STATE_SUCCEEDED, st
        assert st.activities[0].attempt == 1, st
        staged = [e for e in events if e.state == S.ACTIVITY_STATE_STAGING and "bytes" in e.detail]
        # The input arrived only after the holder had been killed and was back.
        assert len(staged) == 1 and staged[0].time_unix_ms > back_ms[0], staged
        print(f"\nstaged after the restart: {staged[0].message} {dict(staged[0].detail)}")
        assert staged[0].detail["bytes"] == str(size), staged[0].detail
        assert staged[0].detail["sent_twice"] == "0", staged[0].detail
        check_runs(markers, st, events)
        run(status(monitor, cid))
