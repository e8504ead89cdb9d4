"""A network partition across namespaces: a contractor's namespace cut off for 10 s.

All traffic in and out of the contractor's namespace is dropped with nftables while
it runs an activity, then the table is deleted.
"""

from __future__ import annotations

import threading
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
    submit,
    wait_views,
)
from tests.system.test_faults_processes import outbox_len

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PARTITION_S = 10.0


def test_partitioned_contractor_is_reawarded_and_its_late_result_ignored(tmp_path: Path) -> None:
    """Injects: nft drop of everything in and out of the contractor's namespace for 10 s,
    starting when its 6-s activity is RUNNING (the contractor process keeps running).

    Right final state, as defined here: the monitor cannot tell a partition from a crash,
    so once gossip declares the contractor dead (< 10 s) the activity is re-awarded
    (RETRYING, attempt 2) to the reachable worker and the campaign SUCCEEDS with that
    attempt's result. The cut-off attempt 1 may finish on its side of the partition; when
    the link heals its report arrives and is ignored (no event of attempt 1 after the
    RETRYING, last_seq unchanged once its outbox is flushed), and the healed agent is
    alive again everywhere. Journal and markers as always.
    """
    markers = tmp_path / "markers"
    plans = [AgentPlan(worker=False), AgentPlan(), AgentPlan()]
    with lab_mesh(tmp_path, plans) as (lab, agents):
        monitor = agents[0]
        index = {a.name: i for i, a in enumerate(agents)}
        acts = [
            marked(markers, "long", "sleep 6", requires=WORKER),
            marked(markers, "after", "true", requires=WORKER, depends_on=["long"]),
        ]
        cid = run(submit(monitor, "partition", acts))
        cut: list[str] = []
        healed = threading.Event()

        def heal(i: int) -> None:
            lab.unblock(i)
            healed.set()

        def inject(ev: S.Event) -> None:
            if ev.activity == "long" and ev.state == S.ACTIVITY_STATE_RUNNING and not cut:
                cut.append(ev.agent)
                lab.block(index[ev.agent])
                threading.Timer(PARTITION_S, heal, (index[ev.agent],)).start()

        t0 = time.monotonic()
        run(follow(monitor, cid, inject))
        took = time.monotonic() - t0
        assert healed.wait(PARTITION_S + 5), "the partition was never healed"
        victim = agents[index[cut[0]]]
        st, events = run(check_journal(monitor, cid))
        assert st.state == S.CAMPAIGN_STATE_SUCCEEDED, st
        long = st.activities[0]
        assert long.attempt == 2 and long.agent != victim.name, long
        retry = [
            e.seq for e in events if e.activity == "long" and e.state == S.ACTIVITY_STATE_RETRYING
        ]
        assert len(retry) == 1
        late = [e for e in events if e.activity == "long" and e.attempt == 1 and e.seq > retry[0]]
        assert not late, f"events of the cut-off attempt after its re-award: {late}"

        wait_views(agents, {a.name: "alive" for a in agents}, 30, "all alive after healing")
        deadline = time.monotonic() + 30
        while outbox_len(victim.home) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert outbox_len(victim.home) == 0, "the healed contractor never delivered its report"
        again, _ = run(check_journal(monitor, cid))
        assert again.last_seq == st.last_seq and again.activities[0].attempt == 2
        lines = check_runs(markers, st, events, superseded_may_finish=True)
        print(f"\ncampaign ended {took:.1f}s after submit; markers {lines}")
