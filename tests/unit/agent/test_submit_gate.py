"""Admission of submitted campaigns: per-identity limits with a retry hint."""

from __future__ import annotations

import asyncio

import pytest

from zambeze_mesh.agent.submit_gate import SubmitGate
from zambeze_mesh.errors import Overloaded


async def test_limits_are_per_identity_and_carry_a_retry_hint() -> None:
    gate = SubmitGate(limit=15)
    order: list[str] = []
    release = asyncio.Event()

    async def hold(owner: str, n: int) -> None:
        async with gate.admit(owner, n):
            order.append(owner)
            await release.wait()

    first = asyncio.create_task(hold("alice", 10))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="retry in") as err:
        async with gate.admit("alice", 10):
            pass
    assert err.value.retry_after_s >= 1.0
    bob = asyncio.create_task(hold("bob", 10))  # another identity waits its turn
    small = asyncio.create_task(hold("alice", 5))  # fits under alice's limit
    await asyncio.sleep(0.01)
    assert order == ["alice"]  # one preparation at a time
    release.set()
    await asyncio.gather(first, bob, small)
    assert sorted(order) == ["alice", "alice", "bob"]
    assert gate.pending == {} and gate.waiting == 0
    # A campaign bigger than the limit is admitted when nothing else is waiting.
    async with gate.admit("alice", 1000):
        assert gate.pending == {"alice": 1000}
