"""The quickstart notebook, executed headless (nbclient + ipykernel) against a real agent.

The kernel is this venv's Python, registered in a kernelspec under ``tmp_path``; it
reaches the agent through ``$ZMESH_HOME`` (the agent's Unix socket). Jupyter's own
sockets are on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import ProcMesh

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (install the `test` extra)")
pytest.importorskip("nbclient", reason="needs nbclient (install the `test` extra)")
pytest.importorskip("ipykernel", reason="needs ipykernel (install the `test` extra)")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[2] / "scripts" / "notebooks" / "quickstart.ipynb"


class RecordingClient(NotebookClient):
    """A notebook client that also keeps every iopub message type and content."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.messages.append((msg["msg_type"], msg.get("content", {})))
        return super().process_message(msg, cell, cell_index)


def _kernel_manager(tmp_path: Path, zmesh_home: Path) -> KernelManager:
    """A kernel running this venv's Python with ``ZMESH_HOME`` set, from a private kernelspec."""
    spec_dir = tmp_path / "kernels" / "zmesh-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "zambeze-mesh test",
        "language": "python",
        "env": {"ZMESH_HOME": str(zmesh_home), "IPYTHONDIR": str(tmp_path / "ipython")},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name="zmesh-test", kernel_spec_manager=ksm)


def _text(cell: Any) -> str:
    """All stream and text/plain output of a code cell."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
    return "\n".join(parts)


def test_quickstart_notebook_runs_against_a_live_agent(
    procmesh: ProcMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = procmesh.init("nb")
    agent.start()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = RecordingClient(
        nb, km=_kernel_manager(tmp_path, agent.home), timeout=120, allow_errors=False
    )
    client.execute(cwd=str(tmp_path))

    out = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    # zm.connect() used $ZMESH_HOME; the `await client.list_members()` cell ran.
    assert f"unix:{agent.home / 'agent.sock'}" in out
    assert "connected to 'nb'" in out
    # Function result and shell output came back through the futures.
    assert "RESULT mean of squares = 11.0" in out
    assert "RESULT lines counted   = 5" in out
    # `await campaign.wait_async()` and the fully async cell.
    campaign_line = next(line for line in out.splitlines() if line.startswith("CAMPAIGN "))
    assert campaign_line.endswith(" SUCCEEDED")
    assert "ASYNC SUCCEEDED" in out
    assert "6 <campaign> SUCCEEDED" in out  # events seq 1..6 of a one-activity campaign

    # poll(blocking=True) displayed an HTML table, then updated it in place while running.
    shown = [
        (kind, c)
        for kind, c in client.messages
        if kind in ("display_data", "update_display_data") and "text/html" in c.get("data", {})
    ]
    assert shown and shown[0][0] == "display_data"
    updates = [c["data"]["text/html"] for kind, c in shown if kind == "update_display_data"]
    assert any("RUNNING" in html for html in updates[:-1]), "no live update while running"
    assert "SUCCEEDED" in updates[-1] and "mean of squares" in updates[-1]
    cid = campaign_line.split()[1]
    assert cid in updates[-1]
