"""Fixtures for the execution tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.execution.execution_helpers import MakeReq
from zambeze_mesh.execution import PythonPlugin, RunRequest, ShellPlugin
from zambeze_mesh.v1 import common_pb2


@pytest.fixture
def make_req(tmp_path: Path) -> MakeReq:
    """Build a RunRequest for a shell or python spec under tmp_path."""
    counter = iter(range(1, 1000))

    def make(
        shell: common_pb2.ShellSpec | None = None,
        python: common_pb2.PythonSpec | None = None,
        activity: str | None = None,
        timeout_s: float | None = None,
        env: dict[str, str] | None = None,
    ) -> RunRequest:
        name = activity or f"act{next(counter)}"
        if shell is not None:
            spec = common_pb2.ActivitySpec(name=name, shell=shell)
            kind = "shell"
        else:
            spec = common_pb2.ActivitySpec(name=name, python=python)
            kind = "python"
        work = tmp_path / "agent" / "work" / "c1" / name
        return RunRequest(
            campaign_id="c1",
            activity=name,
            attempt=1,
            kind=kind,
            spec=spec,
            working_dir=work,
            output_dir=work / "output",
            agent_dir=tmp_path / "agent",
            env=dict(env or {}),
            timeout_s=timeout_s,
        )

    return make


@pytest.fixture
async def shell() -> AsyncIterator[ShellPlugin]:
    """A shell plugin with a short kill grace period."""
    plugin = ShellPlugin(options={"grace_s": 1.0})
    yield plugin
    await plugin.close()


@pytest.fixture
async def python_plugin() -> AsyncIterator[PythonPlugin]:
    """A python plugin with a two-worker pool."""
    plugin = PythonPlugin(options={"workers": 2, "grace_s": 1.0})
    yield plugin
    await plugin.close()
