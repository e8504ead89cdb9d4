"""The async runner over the in-memory transport, on real (short) time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from zambeze_mesh.errors import Unavailable
from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.events import MemberEvent
from zambeze_mesh.membership.messages import Gossip, Update
from zambeze_mesh.membership.runner import SwimRunner
from zambeze_mesh.membership.swim import Swim
from zambeze_mesh.membership.transport import Transport
from zambeze_mesh.transport.memory import MemoryNetwork


async def _until(cond: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        for _ in range(100_000):
            if cond():
                return
            await asyncio.sleep(0.02)


def _record_maker(name: str) -> Callable[[int], tuple[str, int]]:
    return lambda inc: (name, inc)


def _statuses(r: SwimRunner) -> dict[str, str]:
    return {m.name: m.status for m in r.members()}


async def test_runner_five_agents_join_detect_and_leave() -> None:
    net = MemoryNetwork(loss=0.0, delay=(0.0005, 0.002), rng=random.Random(3))
    cfg = Config.local()
    runners = []
    for i in range(5):
        t = net.transport(f"mem://a{i}")
        assert isinstance(t, Transport)
        swim = Swim(f"a{i}", t.address, cfg, random.Random(i), _record_maker(f"a{i}"))
        runners.append(SwimRunner(swim, t))
    seen: list[MemberEvent] = []
    runners[0].add_listener(seen.append)

    async def collect(r: SwimRunner, out: list[MemberEvent]) -> None:
        async for ev in r.events():
            out.append(ev)

    streamed: list[MemberEvent] = []
    consumer = asyncio.create_task(collect(runners[1], streamed))
    await asyncio.sleep(0)
    for r in runners:
        await r.start([(None, "mem://a0")])
    try:
        await _until(lambda: all(r.swim.count("alive") == 5 for r in runners), 3.0)
        assert {ev.member.name for ev in seen if ev.kind == "alive"} == {"a1", "a2", "a3", "a4"}

        await runners[4].close()  # crash: a4 answers nothing any more
        await _until(lambda: all(_statuses(r)["a4"] == "dead" for r in runners[:4]), 5.0)

        await runners[3].leave(drain=0.5)
        await _until(lambda: all(_statuses(r)["a3"] == "left" for r in runners[:3]), 3.0)
        assert all(_statuses(r)["a4"] == "dead" for r in runners[:3])
        assert all(r.swim.count("alive") == 3 for r in runners[:3])
    finally:
        for r in runners:
            await r.close()
    await asyncio.wait_for(consumer, 1.0)  # close() ends the event stream
    kinds = {(ev.kind, ev.member.name) for ev in streamed}
    assert ("dead", "a4") in kinds and ("left", "a3") in kinds


async def test_memory_transport_partition_loss_and_refusal() -> None:
    net = MemoryNetwork()
    a, b = net.transport("x"), net.transport("y")

    async def echo(src: str, msg: object) -> object | None:
        return (src, msg)

    b.serve(echo)
    assert await a.request("y", "hi", 0.5) == ("x", "hi")
    net.partition(["x"], ["y"])
    with pytest.raises(Unavailable):
        await a.request("y", "hi", 0.05)
    net.heal()
    assert await a.request("y", Gossip("x", (Update("alive", "x", 0),)), 0.5) is not None
    with pytest.raises(Unavailable):
        await a.request("nobody", "hi", 0.5)
    await b.close()
    with pytest.raises(Unavailable):
        await a.request("y", "hi", 0.5)
