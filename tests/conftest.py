"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import ProcMesh


@pytest.fixture
def procmesh(tmp_path: Path) -> Iterator[ProcMesh]:
    """A mesh of real agent processes, stopped at teardown."""
    mesh = ProcMesh(tmp_path)
    try:
        yield mesh
    finally:
        mesh.stop_all()
