"""``scripts/clients/python_stubs_client.py`` (generated stubs + grpc only) against a live agent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import ProcAgent, ProcMesh, zmesh

CLIENT = Path(__file__).resolve().parents[2] / "scripts" / "clients" / "python_stubs_client.py"


@pytest.fixture(scope="module")
def agent_and_creds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcAgent, Path]]:
    """A running agent (shared by this module's tests) and client credentials from its CA."""
    root = tmp_path_factory.mktemp("stubs")
    mesh = ProcMesh(root)
    try:
        agent = mesh.init("stubs")
        agent.start()
        creds = root / "creds"
        zmesh("cert", "issue-client", "stubs-client", "--out", str(creds), home=agent.home)
        yield agent, creds
    finally:
        mesh.stop_all()


def run_client(agent: ProcAgent, creds: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the stubs client against the agent's mTLS port."""
    cmd = [sys.executable, str(CLIENT), "--target", agent.address, "--ca", str(creds / "ca.crt")]
    if "--insecure-no-cert" not in extra:
        cmd += ["--cert", str(creds / "client.crt"), "--key", str(creds / "client.key")]
    cmd += ["--timeout", "60", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def test_stubs_client_runs_a_campaign(agent_and_creds: tuple[ProcAgent, Path]) -> None:
    agent, creds = agent_and_creds
    proc = run_client(agent, creds)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    cid = lines[0].split()[2]
    assert lines[0] == f"submitted campaign {cid} (monitor stubs)"
    events = [line for line in lines if line.startswith("event ")]
    seqs = [int(line.split()[1].removeprefix("seq=")) for line in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert "campaign state=CAMPAIGN_STATE_RUNNING" in events[0]
    assert "campaign state=CAMPAIGN_STATE_SUCCEEDED" in events[-1]
    assert any(
        "activity=reply state=ACTIVITY_STATE_SUCCEEDED" in e and "hello from python stubs" in e
        for e in events
    )
    assert lines[-1] == f"campaign {cid} SUCCEEDED"


def test_stubs_client_without_certificate_is_refused(
    agent_and_creds: tuple[ProcAgent, Path],
) -> None:
    agent, creds = agent_and_creds
    proc = run_client(agent, creds, "--insecure-no-cert")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "rpc error: UNAVAILABLE" in proc.stdout
    assert "submitted campaign" not in proc.stdout


def test_stubs_client_may_not_call_agent_services(
    agent_and_creds: tuple[ProcAgent, Path],
) -> None:
    agent, creds = agent_and_creds
    proc = run_client(agent, creds, "--call-membership")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "rpc error: PERMISSION_DENIED" in proc.stdout
    assert "agents only" in proc.stdout
