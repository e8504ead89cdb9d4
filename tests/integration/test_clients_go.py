"""The Go example client (``scripts/clients/go``) against a live three-agent mesh over mTLS.

The client is generated from ``proto/`` and built in GOPATH mode with Debian's Go
packages (``scripts/clients/go/build``; no module download). Skipped when those are
not installed (``scripts/test`` installs them as root).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.procs import ProcMesh, zmesh

GO_DIR = Path(__file__).resolve().parents[2] / "scripts" / "clients" / "go"
TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS) or not Path("/usr/share/gocode/src").is_dir(),
    reason="the Go client test needs golang-go, golang-google-grpc-dev, golang-goprotobuf-dev, "
    "protoc-gen-go-grpc and protobuf-compiler (apt-get install them)",
)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client, generated from proto/ and built once for this module."""
    out = tmp_path_factory.mktemp("go")
    build = subprocess.run(
        [str(GO_DIR / "build"), str(out)], capture_output=True, text=True, timeout=900
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out / "zmesh-go-client"


def test_go_client_against_three_agents(procmesh: ProcMesh, tmp_path: Path, binary: Path) -> None:
    a = procmesh.init("a")
    a.start()
    b = procmesh.join("b", a)
    b.start()
    c = procmesh.join("c", a)
    c.start()
    procmesh.wait_for(
        lambda: all(len(x.statuses()) == 3 for x in (a, b, c)), 40, "a three-agent mesh"
    )
    creds = tmp_path / "creds"
    zmesh("cert", "issue-client", "go-client", "--out", str(creds), home=a.home)
    proc = subprocess.run(
        [
            str(binary),
            "-target",
            b.address,
            "-ca",
            str(creds / "ca.crt"),
            "-cert",
            str(creds / "client.crt"),
            "-key",
            str(creds / "client.key"),
            "-timeout",
            "90s",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    cid = lines[0].split()[2]
    assert lines[0] == f"submitted campaign {cid} to monitor b"
    seqs = [int(ln.split()[1].removeprefix("seq=")) for ln in lines if ln.startswith("event ")]
    assert seqs == list(range(1, len(seqs) + 1))  # across the resume: no gap, no repeat
    assert "dropped the stream after seq 3; resuming with after_seq=3" in out
    assert f"campaign {cid} ended CAMPAIGN_STATE_SUCCEEDED after {len(seqs)} events" in out
    assert 'consume read "42" from produce\'s output' in out
    assert "agent-only Membership.Ping refused: PermissionDenied" in out
    assert lines[-1] == "OK"
    # the monitor agrees, through the CLI on its Unix socket
    status = json.loads(zmesh("status", cid, "--json", home=b.home).stdout)
    assert status["state"] == "SUCCEEDED" and status["last_seq"] == seqs[-1]
    acts = {x["name"]: x for x in status["activities"]}
    assert acts["consume"]["detail"]["stdout_tail"] == "42\n"


def test_go_client_usage_error(binary: Path) -> None:
    proc = subprocess.run(
        [str(binary), "-target", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "-target, -ca, -cert and -key are required" in proc.stderr
