"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import ProcMesh

# An illegal activity transition is a bug: in tests it raises (in agent processes
# started by tests too) instead of being logged and refused.
os.environ.setdefault("ZMESH_STRICT_TRANSITIONS", "1")


@pytest.fixture
def procmesh(tmp_path: Path) -> Iterator[ProcMesh]:
    """A mesh of real agent processes, stopped at teardown."""
    mesh = ProcMesh(tmp_path)
    try:
        yield mesh
    finally:
        mesh.stop_all()
