"""The protocol cores are pure: importing them loads no I/O machinery.

Each check runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Modules a pure state machine must never load, directly or through its imports.
IMPURE = ("asyncio", "grpc", "sqlite3", "networkx")


def loaded_after_import(module: str) -> list[str]:
    """Which of :data:`IMPURE` a fresh interpreter holds after ``import module``."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps([m for m in {IMPURE!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return list(json.loads(out.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "zambeze_mesh.scheduling.contract_net",
        "zambeze_mesh.scheduling.states",
        "zambeze_mesh.membership.swim",
        "zambeze_mesh.data.uris",
        "zambeze_mesh.errors",
    ],
)
def test_pure_module_loads_no_io_machinery(module: str) -> None:
    assert loaded_after_import(module) == []


def test_the_check_sees_an_impure_import() -> None:
    # The DAG uses networkx and the data client gRPC: the check must notice both.
    assert "networkx" in loaded_after_import("zambeze_mesh.scheduling.dag")
    assert "grpc" in loaded_after_import("zambeze_mesh.data.client")
