"""An activity's process dies with its agent, even when the agent is killed with SIGKILL.

No namespaces needed: a stand-in agent process runs a shell activity through
:class:`~zambeze_mesh.execution.process.ProcessRun` and is killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zambeze_mesh.execution.process import death_guard

AGENT = """
import asyncio, sys
from pathlib import Path
from zambeze_mesh.execution.process import ProcessRun
cmd = "echo $$ > started; sleep 2; echo ran-to-the-end > done"
asyncio.run(ProcessRun(["sh", "-c", cmd], cwd=Path(sys.argv[1])).run())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for init to reap it is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not death_guard(), reason="setpriv --pdeathsig is not available")
def test_activity_shell_dies_with_a_killed_agent(tmp_path: Path) -> None:
    """Injects: SIGKILL of the process that started an activity (as kill -9 of a contractor).

    Checks: the activity's shell is killed with it, so the script never reaches its next
    command (before the fix it ran to the end beside the re-awarded attempt).
    """
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(tmp_path)])
    started = tmp_path / "started"
    deadline = time.monotonic() + 20
    while not (started.exists() and started.read_text().strip()):
        assert time.monotonic() < deadline and agent.poll() is None, "activity never started"
        time.sleep(0.02)
    shell = int(started.read_text())
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(10)
    deadline = time.monotonic() + 5
    while _alive(shell) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(shell), "the activity's shell outlived its agent"
    time.sleep(2.5)
    assert not (tmp_path / "done").exists()
