"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import ProcMesh

# The control plane's state machines raise on an illegal transition in tests (agent
# processes started by tests inherit it); in production they log and refuse it.
os.environ.setdefault("ZMESH_STRICT_MACHINES", "1")


@pytest.fixture
def procmesh(tmp_path: Path) -> Iterator[ProcMesh]:
    """A mesh of real agent processes, stopped at teardown."""
    mesh = ProcMesh(tmp_path)
    try:
        yield mesh
    finally:
        mesh.stop_all()
