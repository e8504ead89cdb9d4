"""The Node.js example client (``scripts/clients/node``) against live agent processes.

Skipped when ``node``/``npm`` are not installed. The first run installs the client's
dependencies with ``npm ci`` (from the committed package-lock.json) if node_modules
is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import ProcAgent, ProcMesh, zmesh

NODE_DIR = Path(__file__).resolve().parents[2] / "scripts" / "clients" / "node"
DEPS = ("@grpc/grpc-js", "@grpc/proto-loader")

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="the Node.js client test needs `node` and `npm` on PATH (apt-get install nodejs npm)",
)


def _ensure_node_modules() -> None:
    if all((NODE_DIR / "node_modules" / dep / "package.json").exists() for dep in DEPS):
        return
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"npm ci in {NODE_DIR} failed:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def mesh_and_creds(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, ProcAgent], Path]]:
    """Two joined agents (a created the mesh) and client credentials issued by a."""
    _ensure_node_modules()
    root = tmp_path_factory.mktemp("node")
    mesh = ProcMesh(root)
    try:
        a = mesh.init("a")
        a.start()
        b = mesh.join("b", a)
        b.start()
        mesh.wait_for(
            lambda: len(a.statuses()) == 2 and len(b.statuses()) == 2, 30, "a two-agent mesh"
        )
        creds = root / "creds"
        zmesh("cert", "issue-client", "node-client", "--out", str(creds), home=a.home)
        yield mesh.agents, creds
    finally:
        mesh.stop_all()


def run_client(agent: ProcAgent, creds: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``node client.js`` against the agent's mTLS port."""
    cmd = ["node", "client.js", "--target", agent.address, "--ca", str(creds / "ca.crt")]
    if "--insecure-no-cert" not in extra:
        cmd += ["--cert", str(creds / "client.crt"), "--key", str(creds / "client.key")]
    cmd += ["--timeout", "60", *extra]
    return subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("via", ["a", "b"])
def test_node_client_runs_a_campaign(
    mesh_and_creds: tuple[dict[str, ProcAgent], Path], via: str
) -> None:
    agents, creds = mesh_and_creds
    proc = run_client(agents[via], creds)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DeprecationWarning" not in proc.stderr
    lines = proc.stdout.splitlines()
    cid = lines[0].split()[2]
    assert lines[0] == f"submitted campaign {cid} (monitor {via})"
    events = [line for line in lines if line.startswith("event ")]
    seqs = [int(line.split()[1].removeprefix("seq=")) for line in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert "campaign state=CAMPAIGN_STATE_RUNNING" in events[0]
    assert "campaign state=CAMPAIGN_STATE_SUCCEEDED" in events[-1]
    done = [e for e in events if "state=ACTIVITY_STATE_SUCCEEDED" in e]
    assert [e.split()[2] for e in done] == ["activity=greet", "activity=reply"]
    assert "hello from node" in done[1]
    assert lines[-1] == f"campaign {cid} SUCCEEDED"
    # The agent agrees (checked through the CLI on the monitor's Unix socket).
    status = zmesh("status", cid, "--json", home=agents[via].home).stdout
    assert '"SUCCEEDED"' in status


def test_node_client_without_certificate_is_refused(
    mesh_and_creds: tuple[dict[str, ProcAgent], Path],
) -> None:
    agents, creds = mesh_and_creds
    proc = run_client(agents["a"], creds, "--insecure-no-cert")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "rpc error: UNAVAILABLE" in proc.stdout
    assert "refused: TLS handshake failed" in proc.stdout
    assert "submitted campaign" not in proc.stdout


def test_node_client_may_not_call_agent_services(
    mesh_and_creds: tuple[dict[str, ProcAgent], Path],
) -> None:
    agents, creds = mesh_and_creds
    proc = run_client(agents["a"], creds, "--call-membership")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "rpc error: PERMISSION_DENIED" in proc.stdout
    assert "spiffe://test/client/node-client" in proc.stdout
