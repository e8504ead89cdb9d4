"""The stager's filesystem work (stat, realpath, mkdir) runs off the event loop.

A real :class:`Sandbox` on tmp_path, wrapped so that its path check can be made slow
(a hung network filesystem): while it is slow, the event loop still runs.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zambeze_mesh.agent.contractor import Job
from zambeze_mesh.agent.staging import Stager
from zambeze_mesh.data.sandbox import Sandbox
from zambeze_mesh.errors import NotPermitted
from zambeze_mesh.scheduling import ActivityDef, TenderKey
from zambeze_mesh.v1 import common_pb2, scheduling_pb2

#: The most a slow path check waits for the loop to go on (a generous bound).
SLOW_AT_MOST_S = 3.0


class SlowSandbox:
    """A sandbox whose ``root_of`` can wait until the event loop has moved on."""

    def __init__(self, real: Sandbox) -> None:
        self.real = real
        self.threads: list[str] = []
        self.slow = False
        self.loop_moved = threading.Event()
        self.loop_ran_meanwhile: bool | None = None

    def root_of(self, real: Path) -> Path:
        self.threads.append(threading.current_thread().name)
        if self.slow:
            self.slow = False
            self.loop_ran_meanwhile = self.loop_moved.wait(SLOW_AT_MOST_S)
        return self.real.root_of(real)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _stager(tmp_path: Path) -> tuple[Stager, SlowSandbox]:
    data_dir = tmp_path / "agentdir"
    data_dir.mkdir()
    sandbox = SlowSandbox(Sandbox(data_dir))
    data = SimpleNamespace(sandbox=sandbox, catalog=None)
    stager = Stager(name="a", mesh="m", data_dir=data_dir, data=data, fetch=None)  # type: ignore[arg-type]
    return stager, sandbox


def _job(activity: str, working_dir: str = "") -> Job:
    spec = common_pb2.ActivitySpec(name=activity, working_dir=working_dir)
    spec.shell.cmd = "true"
    tender = scheduling_pb2.Tender(
        campaign_id="c1", activity=activity, attempt=1, spec=spec, owner="user:alice"
    )
    act = ActivityDef(name=activity, kind="shell", plugin="shell")
    return Job(TenderKey("c1", activity, 1), "mon", act, scheduling_pb2.AwardItem(tender=tender))


async def _no_emit(*_: object) -> None:
    return None


def test_a_slow_path_check_does_not_block_the_loop(tmp_path: Path) -> None:
    async def go() -> None:
        stager, sandbox = _stager(tmp_path)
        sandbox.slow = True

        async def loop_moves() -> None:
            await asyncio.sleep(0.05)
            sandbox.loop_moved.set()

        mover = asyncio.create_task(loop_moves())
        prepared = await stager.prepare(_job("a1"), _no_emit)
        await mover
        assert sandbox.loop_ran_meanwhile, "the event loop was blocked during the check"
        assert prepared.working_dir.is_dir() and prepared.output_dir.is_dir()
        assert threading.main_thread().name not in sandbox.threads

    asyncio.run(go())


def test_dirs_are_checked_once_and_outside_ones_refused_uncreated(tmp_path: Path) -> None:
    async def go() -> None:
        stager, sandbox = _stager(tmp_path)
        await stager.prepare(_job("a1"), _no_emit)
        checks = len(sandbox.threads)
        await stager.prepare(_job("a1"), _no_emit)  # same dirs: one stat each, no realpath
        assert len(sandbox.threads) == checks
        outside = tmp_path / "elsewhere" / "work"
        with pytest.raises(NotPermitted, match="working_dir"):
            await stager.prepare(_job("a2", working_dir=str(outside)), _no_emit)
        assert not outside.exists()

    asyncio.run(go())
