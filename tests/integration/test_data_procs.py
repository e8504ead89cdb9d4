"""Data service through real agent processes: kill -9 mid-transfer, and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.helpers.procs import ProcAgent, ProcMesh, zmesh
from zambeze_mesh.data.client import METHODS, DataClient
from zambeze_mesh.settings.home import Home

MiB = 1 << 20


def sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def write_random(p: Path, n: int) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        left = n
        while left:
            k = min(left, 8 * MiB)
            f.write(os.urandom(k))
            left -= k
    return p


def alive_everywhere(mesh: ProcMesh, names: set[str]) -> bool:
    return all(
        all(a.statuses().get(n) == "alive" for n in names)
        for a in mesh.agents.values()
        if a.pid is not None
    )


def two_agents(procmesh: ProcMesh) -> tuple[ProcAgent, ProcAgent]:
    a = procmesh.init("a")
    a.start()
    b = procmesh.join("b", a)
    b.start()
    procmesh.wait_for(lambda: alive_everywhere(procmesh, {"a", "b"}), 30, "a and b alive")
    return a, b


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tls-stream", "grpc-stream"])
async def test_holder_killed_mid_transfer_resumes_from_offset(
    procmesh: ProcMesh, method: str
) -> None:
    a = procmesh.init("a")
    a.start()
    b = procmesh.join("b", a)  # b's home only lends its identity to this test process
    size = 200 * MiB
    src = write_random(a.home / "data" / "big.bin", size)
    dest = procmesh.root / "fetched" / "big.bin"
    restarted: list[asyncio.Task[None]] = []
    killed_at: list[int] = []

    def on_progress(done: int, total: int) -> None:
        if done >= 60 * MiB and not killed_at:
            killed_at.append(done)
            a.kill9()
            restarted.append(asyncio.get_running_loop().create_task(asyncio.to_thread(a.start)))

    client = DataClient.from_home(
        Home(b.home),
        addresses={"a": a.address},
        methods={method: METHODS[method]},
        max_retries=240,
        backoff=lambda n: 0.25,
        transfer_streams=1,
    )
    try:
        res = await client.fetch("a", "big.bin", dest, on_progress=on_progress)
    finally:
        await client.close()
    await restarted[0]
    assert res.method == method, res
    assert killed_at and killed_at[0] < size, killed_at
    assert res.retries >= 1, res
    assert res.sent_twice < 2 * MiB, res  # resumed from its offset, not from zero
    assert res.bytes < size + 2 * MiB, res
    assert sha(dest) == sha(src)


@pytest.mark.slow
def test_cli_ls_get_put_round_trip(procmesh: ProcMesh, tmp_path: Path) -> None:
    a, b = two_agents(procmesh)
    data = a.home / "data"
    write_random(data / "results" / "r1.bin", 3 * MiB)
    write_random(data / "results" / "deep" / "r2.bin", 1000)

    out = zmesh("data", "ls", "a://results", "--json", home=b.home).stdout
    doc = json.loads(out)
    assert [e["path"] for e in doc["entries"]] == ["results/deep", "results/r1.bin"]
    assert doc["truncated"] is False
    assert "r1.bin" in zmesh("data", "ls", "a://results", home=b.home).stdout

    local = tmp_path / "local"
    local.mkdir()
    got = zmesh("data", "get", "a://results/r1.bin", str(local), home=b.home)
    assert "fetched 3.0 MiB" in got.stdout
    assert sha(local / "r1.bin") == sha(data / "results" / "r1.bin")
    zmesh("data", "get", "a://results", str(local / "copy"), home=b.home)
    assert sha(local / "copy" / "deep" / "r2.bin") == sha(data / "results" / "deep" / "r2.bin")
    again = zmesh("data", "get", "a://results", str(local / "copy"), home=b.home)
    assert "fetched 0 B" in again.stdout and "2 already present" in again.stdout

    up = write_random(tmp_path / "up" / "u.bin", MiB + 1)
    zmesh("data", "put", str(up), "a://incoming/u.bin", home=b.home)
    assert sha(data / "incoming" / "u.bin") == sha(up)
    zmesh("data", "put", str(tmp_path / "up"), "a://tree", home=b.home)
    assert sha(data / "tree" / "u.bin") == sha(up)
    # The other way round: a's CLI pushes to and fetches from b.
    zmesh("data", "put", str(up), "b://from-a.bin", home=a.home)
    zmesh("data", "get", "b://from-a.bin", str(local / "back.bin"), home=a.home)
    assert sha(local / "back.bin") == sha(up) == sha(b.home / "data" / "from-a.bin")
    bad = zmesh("data", "get", "a://../etc/passwd", str(local / "p"), home=b.home, check=False)
    assert bad.returncode == 2 and "not allowed" in bad.stderr  # refused by URI parsing
    bad = zmesh("data", "get", "a:///etc/passwd", str(local / "p"), home=b.home, check=False)
    assert bad.returncode == 3 and "outside" in bad.stderr  # refused by the holder
    assert not (local / "p").exists()
    bad = zmesh("data", "ls", "nosuch://x", home=b.home, check=False)
    assert bad.returncode == 4
