"""Process helpers shared by the execution tests."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from zambeze_mesh.execution import RunRequest

MakeReq = Callable[..., RunRequest]


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pids: list[int], timeout: float = 5.0) -> bool:
    """Poll until every pid is gone (or a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def wait_for_file_lines(path: Path, n: int, within: float = 5.0) -> list[str]:
    """Wait until a file has n lines; return them."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        lines = _lines(path)
        if len(lines) >= n:
            return lines
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never got {n} lines")
