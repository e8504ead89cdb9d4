"""Shared by the fault-injection tests: a mesh of namespaced agents and campaign checks.

``lab_mesh`` creates a :class:`~tests.system.netns.Lab`, an agent per host (host 0 is
the seed and the monitor, the others carry ``role=worker``), joins and starts them in
parallel and waits until every agent sees every other alive. Campaigns are submitted
with raw gRPC to the monitor's Unix socket (a path in its home, reachable from the
root namespace).

Every activity built by :func:`marked` appends ``start <name> <attempt>`` to a shared
marker file before its body and ``done <name> <attempt>`` after it; :func:`check_runs`
turns those lines into the "no succeeded activity ran twice" checks.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc

from tests.system.netns import Lab, NsAgent, finish
from zambeze_mesh.agent.bootstrap import open_store
from zambeze_mesh.cli.local import list_members
from zambeze_mesh.cli.members import status_name
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store.tokens import create_token
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2
PORT = 7500
WORKER = S.Requirements(labels={"role": "worker"})
T = TypeVar("T")
OnEvent = Callable[[S.Event], None]


@dataclass
class AgentPlan:
    """How to run one agent of the lab (wrappers are applied to every command)."""

    readonly_data: bool = False
    env: dict[str, str] | None = None
    worker: bool = True
    join: bool = True
    """False: the namespace and the agent object exist, the test joins it itself."""


@contextmanager
def lab_mesh(
    tmp_path: Path, plans: list[AgentPlan], prefix: str = "zf"
) -> Iterator[tuple[Lab, list[NsAgent]]]:
    """A lab with one agent per plan, all alive everywhere; torn down on exit."""
    lab = Lab(f"{prefix}{os.getpid() % 100000}", len(plans), subnet="10.214.0")
    agents = []
    for i, plan in enumerate(plans):
        home = tmp_path / f"n{i}"
        agents.append(
            NsAgent(
                lab.hosts[i],
                f"n{i}",
                home,
                f"{lab.address(i)}:{PORT}",
                readonly=home / "data" if plan.readonly_data else None,
                env=dict(plan.env or {}),
            )
        )
    with lab_up(lab, agents):
        _form(agents, plans)
        yield lab, agents


class Stoppable(Protocol):
    def stop(self) -> None: ...


@contextmanager
def lab_up(lab: Lab, agents: Sequence[Stoppable]) -> Iterator[Lab]:
    """Create the lab's namespaces; on exit stop every agent, then delete them."""
    try:
        lab.create()
        yield lab
    finally:
        for a in agents:
            try:
                a.stop()
            except Exception:  # still delete the namespaces
                pass
        lab.destroy()


def _form(agents: list[NsAgent], plans: list[AgentPlan]) -> None:
    def extra(i: int) -> list[str]:
        return ["--label", "role=worker"] if plans[i].worker else []

    seed = agents[0]
    seed.zmesh("init", "--name", seed.name, "--listen", seed.address, "--mesh", "faults", *extra(0))
    unconfine(seed.home)
    seed.start()
    members = [a for a, plan in zip(agents, plans, strict=True) if plan.join]
    joins = [
        (a, a.popen("join", seed.address, "--token", token(seed), "--name", a.name,
                    "--listen", a.address, *extra(agents.index(a))))
        for a in members[1:]
    ]  # fmt: skip
    for a, p in joins:
        finish(p, f"join of {a.name}")
    for a in members:
        (a.home / "data").mkdir(exist_ok=True)
        unconfine(a.home)
    starts = [(a, a.popen("agent", "start")) for a in members[1:] if "LD_PRELOAD" not in a.env]
    for a, p in starts:
        finish(p, f"start of {a.name}")
    for a in members[1:]:
        if "LD_PRELOAD" in a.env:
            a.start()
    wait_views(members, {a.name: "alive" for a in members}, 30, "every agent alive everywhere")


def unconfine(home: Path) -> None:
    """Run activities unsandboxed: these tests' activities write marker files under the
    test's tmp dir, which the default sandbox (a private /tmp) hides."""
    path = home / "config.toml"
    cfg = AgentConfig.load(path)
    cfg.sandbox = "none"
    cfg.save(path)


def token(a: NsAgent) -> str:
    """A fresh join token from ``a``'s store."""
    store = open_store(Home(a.home))
    try:
        return create_token(store, 600)
    finally:
        store.close()


def views(agents: list[NsAgent]) -> dict[str, dict[str, str]]:
    """Each agent's member view: name → status."""

    async def one(a: NsAgent) -> dict[str, str]:
        try:
            resp = await list_members(Home(a.home), timeout=5)
        except Exception as exc:  # an agent being restarted
            return {"?": type(exc).__name__}
        return {m.name: status_name(m.status) for m in resp.members}

    async def every() -> list[dict[str, str]]:
        return list(await asyncio.gather(*(one(a) for a in agents)))

    return dict(zip([a.name for a in agents], asyncio.run(every()), strict=True))


def wait_views(agents: list[NsAgent], want: dict[str, str], timeout: float, what: str) -> float:
    """Wait until every agent of ``agents`` sees ``want``; seconds it took."""
    t0 = time.monotonic()
    last: dict[str, dict[str, str]] = {}
    while time.monotonic() - t0 < timeout:
        last = views(agents)
        if all(all(v.get(m) == s for m, s in want.items()) for v in last.values()):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last}")


# -- campaigns ---------------------------------------------------------------------------


def marked(markers: Path, name: str, body: str, **kw: object) -> S.ActivitySpec:
    """A shell activity that logs its start and its successful end to ``markers``."""
    log = f'echo "{{}} $ZMESH_ACTIVITY $ZMESH_ATTEMPT" >> {markers}'
    cmd = f"{log.format('start')} && {body} && {log.format('done')}"
    return S.ActivitySpec(name=name, shell=S.ShellSpec(cmd=cmd), **kw)  # type: ignore[arg-type]


async def submit(monitor: NsAgent, name: str, acts: list[S.ActivitySpec]) -> str:
    """Submit a campaign to ``monitor`` over its Unix socket; its id."""
    async with grpc.aio.insecure_channel(f"unix:{monitor.socket}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        resp = await stub.Submit(campaigns_pb2.SubmitRequest(name=name, activities=acts))
        return str(resp.campaign_id)


async def follow(
    monitor: NsAgent, cid: str, on_event: OnEvent | None = None, after: int = 0
) -> list[S.Event]:
    """Watch ``cid`` from ``after`` until its final event (or the monitor goes away)."""
    seen: list[S.Event] = []
    async with grpc.aio.insecure_channel(f"unix:{monitor.socket}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        try:
            req = campaigns_pb2.WatchRequest(campaign_id=cid, after_seq=after, follow=True)
            async for ev in stub.Watch(req):
                seen.append(ev)
                if on_event is not None:
                    on_event(ev)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise
    return seen


async def status(monitor: NsAgent, cid: str) -> campaigns_pb2.CampaignStatus:
    """``Get`` of ``cid`` at ``monitor``."""
    async with grpc.aio.insecure_channel(f"unix:{monitor.socket}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        got: campaigns_pb2.CampaignStatus = await stub.Get(
            campaigns_pb2.GetCampaignRequest(campaign_id=cid), timeout=10
        )
        return got


def is_final(ev: S.Event) -> bool:
    """The campaign-level event that ends a campaign."""
    return not ev.activity and ev.campaign_state not in (0, S.CAMPAIGN_STATE_RUNNING)


async def check_journal(
    monitor: NsAgent, cid: str
) -> tuple[campaigns_pb2.CampaignStatus, list[S.Event]]:
    """Replay ``Watch`` from 0: seq must be exactly 1..last_seq, ending with the final event."""
    st = await status(monitor, cid)
    assert st.state != S.CAMPAIGN_STATE_RUNNING, f"campaign still running: {st}"
    events = await follow(monitor, cid)
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"gaps or duplicates in Watch: {seqs}"
    assert seqs[-1] == st.last_seq, (seqs[-1], st.last_seq)
    assert is_final(events[-1]) and sum(is_final(e) for e in events) == 1
    assert events[-1].campaign_state == st.state
    return st, events


def read_markers(markers: Path) -> list[tuple[str, str, int]]:
    """``(kind, activity, attempt)`` per marker line."""
    if not markers.exists():
        return []
    out = []
    for line in markers.read_text().splitlines():
        kind, name, attempt = line.split()
        out.append((kind, name, int(attempt)))
    return out


def check_runs(
    markers: Path,
    st: campaigns_pb2.CampaignStatus,
    events: list[S.Event],
    *,
    superseded_may_finish: bool = False,
) -> list[tuple[str, str, int]]:
    """No attempt started twice; every SUCCEEDED activity finished once, in its final attempt.

    An earlier attempt may have *started* only if the monitor journaled RETRYING for it
    (it was superseded). With ``superseded_may_finish`` (a partitioned contractor keeps
    running what it has) such an attempt may also have finished; otherwise it must not.
    """
    lines = read_markers(markers)
    starts = Counter((n, a) for k, n, a in lines if k == "start")
    dups = {key: c for key, c in starts.items() if c > 1}
    assert not dups, f"attempts started more than once: {dups}"
    retried = {(e.activity, e.attempt - 1) for e in events if e.state == S.ACTIVITY_STATE_RETRYING}
    for act in st.activities:
        if act.state != S.ACTIVITY_STATE_SUCCEEDED:
            continue
        done = [a for k, n, a in lines if k == "done" and n == act.name]
        started = [a for k, n, a in lines if k == "start" and n == act.name]
        assert act.attempt in started, f"{act.name}: final attempt {act.attempt} never started"
        assert done.count(act.attempt) == 1, f"{act.name} done lines {done}"
        for a in started:
            assert a <= act.attempt, f"{act.name} attempt {a} started after success"
            if a != act.attempt:
                assert (act.name, a) in retried, f"{act.name}: attempt {a} ran but not retried"
        others = [a for a in done if a != act.attempt]
        if not superseded_may_finish:
            assert not others, f"{act.name} ran to the end twice: attempts {sorted(done)}"
    return lines


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` (tests are sync: they also call blocking helpers)."""
    return asyncio.run(coro)
