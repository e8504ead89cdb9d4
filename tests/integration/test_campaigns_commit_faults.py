"""A failed journal commit delays a campaign but never loses or repeats anything.

One in-process mesh of three agents (real gRPC, mTLS, processes); for each N, the
monitor's N-th journal commit after a campaign's submission fails (SQLite really rolls
it back) and the campaign of 50 shell and function activities, with dependencies, must
still finish with every result, a gap-free Watch from 0 and no activity run twice.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from collections import Counter
from pathlib import Path

import cloudpickle
import grpc
import pytest

from tests.helpers.inproc import mesh
from zambeze_mesh.agent.journal import CommitFaults
from zambeze_mesh.control.states import is_allowed
from zambeze_mesh.scheduling.states import from_proto
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2
pytestmark = pytest.mark.slow

N_ACTIVITIES = 50
#: Upper bound on N (a campaign of 50 activities takes about 50 to 130 commits,
#: fewer when group commit gathers more steps per transaction).
MAX_N = 400
#: Generous bound on one campaign (about 2 s on a quiet machine): a lost result
#: leaves its campaign running forever.
CAMPAIGN_TIMEOUT_S = float(os.environ.get("ZMESH_COMMIT_FAULTS_TIMEOUT", "90"))


def _record(path: str, name: str, value: int) -> int:
    with open(path, "a") as f:
        f.write(name + "\n")
    return value * value


def campaign(runs: Path, tag: str) -> list[S.ActivitySpec]:
    """50 activities: shell and function ones alternating, in layers of 10 where each
    depends on two of the previous layer."""
    acts = []
    for i in range(N_ACTIVITIES):
        name = f"{tag}-{i}"
        deps = [f"{tag}-{i - 10}", f"{tag}-{(i - 10) // 10 * 10 + (i + 3) % 10}"] if i >= 10 else []
        deps = sorted(set(deps))
        if i % 2:
            blob = cloudpickle.dumps((_record, (str(runs), name, i), {}))
            acts.append(
                S.ActivitySpec(name=name, python=S.PythonSpec(function=blob), depends_on=deps)
            )
        else:
            cmd = f"echo {name} >> {runs}; echo out-{name}"
            acts.append(S.ActivitySpec(name=name, shell=S.ShellSpec(cmd=cmd), depends_on=deps))
    return acts


async def run_one(
    stub: campaigns_pb2_grpc.CampaignsStub, runs: Path, tag: str
) -> tuple[campaigns_pb2.CampaignStatus, list[S.Event]]:
    resp = await stub.Submit(
        campaigns_pb2.SubmitRequest(name=tag, activities=campaign(runs, tag), client_request_id=tag)
    )
    cid = resp.campaign_id
    events = [
        ev async for ev in stub.Watch(campaigns_pb2.WatchRequest(campaign_id=cid, follow=True))
    ]
    status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid))
    # Watch from 0 once more, now from the journal as well as memory: still gap-free.
    again = [
        ev
        async for ev in stub.Watch(
            campaigns_pb2.WatchRequest(campaign_id=cid, after_seq=0, follow=False)
        )
    ]
    assert [e.seq for e in again] == [e.seq for e in events]
    return status, events


def check(
    status: campaigns_pb2.CampaignStatus, events: list[S.Event], runs: Path, tag: str
) -> None:
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, (tag, status.message)
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"{tag}: Watch has gaps or repeats"
    assert events[-1].campaign_state == S.CAMPAIGN_STATE_SUCCEEDED
    acts = {a.name: a for a in status.activities}
    assert len(acts) == N_ACTIVITIES
    for i in range(N_ACTIVITIES):
        a = acts[f"{tag}-{i}"]
        assert a.state == S.ACTIVITY_STATE_SUCCEEDED, (tag, a)
        if i % 2:
            assert pickle.loads(a.result) == i * i, (tag, a.name)
    # What clients see follows the transition table, with every attempt's AWARDED.
    seen: dict[str, str] = {}
    for ev in events:
        if ev.activity:
            state = from_proto(ev.state)
            old = seen.get(ev.activity, "PENDING")
            assert is_allowed(old, state), f"{tag}/{ev.activity}: {old} -> {state} (seq {ev.seq})"
            seen[ev.activity] = state
    ran = Counter(runs.read_text().split())
    assert set(ran) == set(acts), f"{tag}: not every activity ran"
    twice = sorted(n for n, c in ran.items() if c > 1)
    assert not twice, f"{tag}: ran more than once: {twice}"


async def test_every_failed_commit_is_retried_never_half_applied(tmp_path: Path) -> None:
    async with mesh(tmp_path, 3) as agents:
        monitor = agents[0].monitor
        assert monitor is not None
        faults = monitor.faults = CommitFaults()
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            # A campaign with no fault.
            runs = tmp_path / "runs-ref"
            status, events = await run_one(stub, runs, "ref")
            check(status, events, runs, "ref")
            # Then one campaign per N = 1, 2, ...: its N-th commit fails. Group commit
            # makes the number of commits vary from one campaign to the next, so N goes
            # on until three campaigns in a row ended before their N-th commit.
            failures: list[str] = []
            n, unreached, fired = 0, 0, 0
            while unreached < 3 and n < MAX_N:
                n += 1
                tag = f"n{n}"
                runs = tmp_path / f"runs-{tag}"
                faults.fail(n)
                failed_before = faults.failed
                try:
                    status, events = await asyncio.wait_for(
                        run_one(stub, runs, tag), CAMPAIGN_TIMEOUT_S
                    )
                    check(status, events, runs, tag)
                except (AssertionError, grpc.aio.AioRpcError, TimeoutError) as exc:
                    stuck = {
                        f"{n}:{r.state}:{r.attempt}:{r.agent}"
                        for live in monitor.live.values()
                        for n, r in live.acts.items()
                        if live.name == tag and r.state not in ("SUCCEEDED", "PENDING")
                    }
                    failures.append(f"{tag}: {type(exc).__name__}: {exc} {sorted(stuck)}"[:800])
                    if len(failures) >= int(os.environ.get("ZMESH_COMMIT_FAULTS_MAX", "1")):
                        break
                    continue
                if faults.failed > failed_before:
                    fired, unreached = fired + 1, 0
                else:
                    unreached += 1
                faults.disarm()
            assert not failures, "\n".join(failures)
            assert fired > 20, f"only {fired} faults fired"
            print(f"every N from 1 to {n}: {fired} campaigns had their N-th commit fail")


async def test_journal_unwritable_for_seconds_delays_the_campaign(tmp_path: Path) -> None:
    """A full disk for 2 s while a campaign runs: it waits, then finishes intact."""
    async with mesh(tmp_path, 2) as agents:
        monitor = agents[0].monitor
        assert monitor is not None
        faults = monitor.faults = CommitFaults()
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            runs = tmp_path / "runs"
            faults.fail_for(2.0)
            status, events = await asyncio.wait_for(run_one(stub, runs, "disk"), 120)
            check(status, events, runs, "disk")
    assert faults.failed > 1
    assert monitor.steps.failures == faults.failed
    assert monitor.steps.broken is None


async def test_journal_unwritable_for_too_long_stops_the_agent(tmp_path: Path) -> None:
    """When the journal stays unwritable the agent stops rather than run on with
    campaigns it cannot record; Submit is refused, nothing is half-applied."""
    async with mesh(tmp_path, 1) as agents:
        agent = agents[0]
        monitor = agent.monitor
        assert monitor is not None
        monitor.steps.give_up_after_s = 1.0
        faults = monitor.faults = CommitFaults()
        faults.fail_for(3600)
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = campaign(tmp_path / "runs", "never")[:3]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Submit(campaigns_pb2.SubmitRequest(name="never", activities=acts))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.wait_for(agent.serve_forever(), 30)
        assert monitor.steps.broken is not None
        assert not monitor.live
    assert not (tmp_path / "runs").exists()
