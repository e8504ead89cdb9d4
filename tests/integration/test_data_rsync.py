"""The ``rsync`` transfer method between in-process agents over a real loopback sshd.

The sshd comes from ``scripts/sshd/start`` (installs openssh-server/rsync as root
when missing; reused across runs). Tests needing it skip only when it cannot be
started (not root and not installed).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.helpers.files import sha, write_random
from tests.helpers.inproc import mesh
from zambeze_mesh.agent.datasvc import DataService
from zambeze_mesh.data.client import DataClient
from zambeze_mesh.data.rsync import (
    RsyncSettings,
    endpoint_from_params,
    rsync_command,
    staging_dir,
)
from zambeze_mesh.errors import DataIntegrityError, InvalidInput
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def start_sshd() -> dict[str, str]:
    """Run scripts/sshd/start and return its exported settings (or skip)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "sshd" / "start")], capture_output=True, text=True, timeout=600
    )
    if proc.returncode == 3:
        pytest.skip(f"sshd/rsync cannot be started here: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"scripts/sshd/start failed: {proc.stderr}"
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            out[key] = shlex.split(value)[0]
    return out


@pytest.fixture(scope="module")
def sshd() -> dict[str, str]:
    return start_sshd()


def rsync_config(env: dict[str, str]) -> dict[str, Any]:
    return {
        "transfer_methods": ["rsync", "grpc-stream"],
        "rsync_ssh": env["ZMESH_RSYNC_SSH"],
        "rsync_host": env["ZMESH_SSHD_HOST"],
        "rsync_port": int(env["ZMESH_SSHD_PORT"]),
        "rsync_user": env["ZMESH_SSHD_USER"],
    }


# -- pure pieces ---------------------------------------------------------------------


def test_endpoint_params_are_validated_before_reaching_a_command_line() -> None:
    ok = endpoint_from_params({"host": "127.0.0.1", "user": "u", "path": "/d/x", "port": "2222"})
    assert ok.remote() == "u@127.0.0.1:/d/x" and ok.port == 2222
    assert endpoint_from_params({"host": "::1", "user": "u", "path": "/x"}).remote() == "u@[::1]:/x"
    bad = [
        {"host": "-oProxyCommand=sh", "user": "u", "path": "/x"},
        {"host": "h", "user": "-l", "path": "/x"},
        {"host": "h", "user": "u", "path": "relative"},
        {"host": "h", "user": "u", "path": "/x", "port": "99999"},
        {"host": "h x", "user": "u", "path": "/x"},
    ]
    for params in bad:
        with pytest.raises(InvalidInput):
            endpoint_from_params(params)
    argv = rsync_command(RsyncSettings(ssh="ssh -i k"), ok, Path("/t"), files_from=False)
    assert argv[-2:] == ["u@127.0.0.1:/d/x", "/t"]
    assert argv[argv.index("-e") + 1].startswith("ssh -i k -o BatchMode=yes")
    assert argv[argv.index("-e") + 1].endswith(" -p 2222")  # the holder's port


def test_holder_offers_rsync_only_when_configured_and_for_sandboxed_paths(tmp_path: Path) -> None:
    (tmp_path / "ad").mkdir()
    write_random(tmp_path / "ad" / "f.bin", 10)
    plain = DataService(tmp_path / "ad", [], b"k" * 32, address="127.0.0.1:1")
    assert plain.offer("u", "f.bin", ["rsync", "grpc-stream"]).chosen == "grpc-stream"
    svc = DataService(
        tmp_path / "ad",
        [],
        b"k" * 32,
        methods=["rsync", "grpc-stream"],
        address="127.0.0.1:1",
        rsync_endpoint={"user": "me", "port": "2222"},
    )
    res = svc.offer("u", "f.bin", ["rsync", "grpc-stream"])
    assert res.chosen == "rsync"
    assert res.method_params == {
        "host": "127.0.0.1",
        "user": "me",
        "port": "2222",
        "path": str((tmp_path / "ad" / "f.bin").resolve()),
    }
    assert svc.offer("u", "f.bin", ["grpc-stream", "rsync"]).chosen == "grpc-stream"
    with pytest.raises(Exception, match=r"outside|not permitted|escapes|sandbox|Not"):
        svc.offer("u", "/etc/passwd", ["rsync"])


# -- real agents, real sshd ----------------------------------------------------------


async def test_both_offer_rsync_it_is_used_and_bytes_match(
    tmp_path: Path, sshd: dict[str, str]
) -> None:
    async with mesh(tmp_path, 2, configure=lambda i: rsync_config(sshd)) as (a, b):
        src = write_random(a.data_dir / "big.bin", 3 * MiB + 7)
        tree = a.data_dir / "tree"
        write_random(tree / "x.bin", 200_000)
        write_random(tree / "sub" / "y.bin", MiB)
        (tree / "empty.txt").write_bytes(b"")
        client = DataClient(b)
        dest = tmp_path / "got" / "big.bin"
        res = await client.fetch(a.name, "big.bin", dest)
        assert res.method == "rsync" and res.bytes == src.stat().st_size
        assert sha(dest) == sha(src)
        assert not staging_dir(dest).exists()
        again = await client.fetch(a.name, "big.bin", dest)
        assert again.method == "rsync" and again.bytes == 0 and again.skipped == 1

        out = tmp_path / "got" / "tree"
        res = await client.fetch(a.name, "tree", out)
        assert res.method == "rsync" and res.files == 3 and res.bytes == 200_000 + MiB
        for rel in ("x.bin", "sub/y.bin", "empty.txt"):
            assert sha(out / rel) == sha(tree / rel)
        write_random(tree / "x.bin", 1000)  # one file changes: only it moves
        res = await client.fetch(a.name, "tree", out)
        assert res.bytes == 1000 and res.skipped == 2 and sha(out / "x.bin") == sha(tree / "x.bin")
        assert not staging_dir(out).exists()

        # A campaign: the STAGING event of the remote input says rsync.
        async with grpc.aio.insecure_channel(f"unix:{a.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            act = common_pb2.ActivitySpec(
                name="use",
                shell=common_pb2.ShellSpec(cmd="sha256sum $ZMESH_INPUT_0 > $ZMESH_OUTPUT_DIR/s"),
                data_uris=[f"{a.name}://big.bin"],
                agent=b.name,
            )
            resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="r", activities=[act]))
            events = [
                e
                async for e in stub.Watch(
                    campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
                )
            ]
        staged = [e for e in events if e.state == common_pb2.ACTIVITY_STATE_STAGING and e.detail]
        done = [e for e in staged if "bytes" in e.detail]
        assert len(done) == 1 and done[0].detail["method"] == "rsync", events
        assert done[0].detail["bytes"] == str(src.stat().st_size)


async def test_only_one_side_offers_rsync_grpc_stream_is_used(
    tmp_path: Path, sshd: dict[str, str]
) -> None:
    def configure(i: int) -> dict[str, Any]:
        return rsync_config(sshd) if i == 0 else {}

    async with mesh(tmp_path, 2, configure=configure) as (a, b):
        fa = write_random(a.data_dir / "a.bin", 100_000)
        fb = write_random(b.data_dir / "b.bin", 100_000)
        # b does not speak rsync: as requester it never asks for it ...
        res = await DataClient(b).fetch(a.name, "a.bin", tmp_path / "1" / "a.bin")
        assert res.method == "grpc-stream" and sha(tmp_path / "1" / "a.bin") == sha(fa)
        # ... and as holder it never offers it, although a prefers it.
        res = await DataClient(a).fetch(b.name, "b.bin", tmp_path / "2" / "b.bin")
        assert res.method == "grpc-stream" and sha(tmp_path / "2" / "b.bin") == sha(fb)


async def test_requester_preference_order_decides(tmp_path: Path, sshd: dict[str, str]) -> None:
    def configure(i: int) -> dict[str, Any]:
        cfg = rsync_config(sshd)
        if i == 1:
            cfg["transfer_methods"] = ["grpc-stream", "rsync"]
        return cfg

    async with mesh(tmp_path, 2, configure=configure) as (a, b):
        write_random(a.data_dir / "a.bin", 1000)
        write_random(b.data_dir / "b.bin", 1000)
        res = await DataClient(b).fetch(a.name, "a.bin", tmp_path / "1" / "a.bin")
        assert res.method == "grpc-stream"
        res = await DataClient(a).fetch(b.name, "b.bin", tmp_path / "2" / "b.bin")
        assert res.method == "rsync"


FAKE_SSH = """
import os, sys
args = sys.argv[1:]
cmd = args[args.index("rsync"):]
real, fake = os.environ["ZM_REAL"], os.environ["ZM_FAKE"]
os.execvp(cmd[0], [a.replace(real, fake) for a in cmd])
"""


async def test_tampered_rsync_result_is_refused_and_nothing_is_left(
    tmp_path: Path, sshd: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "ssh" runs the holder's rsync on other bytes of the same size: refused."""
    async with mesh(tmp_path, 2, configure=lambda i: rsync_config(sshd)) as (a, b):
        src = write_random(a.data_dir / "f.bin", 300_000)
        write_random(a.data_dir / "tree" / "one.bin", 5000)
        write_random(a.data_dir / "tree" / "two.bin", 5000)
        fake = tmp_path / "fake"
        write_random(fake / "f.bin", 300_000)
        write_random(fake / "tree" / "one.bin", 5000)
        (fake / "tree" / "two.bin").write_bytes((a.data_dir / "tree" / "two.bin").read_bytes())
        script = tmp_path / "fake_ssh.py"
        script.write_text(FAKE_SSH)
        monkeypatch.setenv("ZM_REAL", str(a.data_dir.resolve()))
        monkeypatch.setenv("ZM_FAKE", str(fake))
        b.config.rsync_ssh = f"{sys.executable} {script}"

        dest = tmp_path / "got" / "f.bin"
        with pytest.raises(DataIntegrityError, match="sha256"):
            await DataClient(b).fetch(a.name, "f.bin", dest)
        assert not dest.exists() and not staging_dir(dest).exists()
        assert sorted(os.listdir(dest.parent)) == []

        out = tmp_path / "got" / "tree"
        with pytest.raises(DataIntegrityError):
            await DataClient(b).fetch(a.name, "tree", out)
        assert not out.exists() or not list(out.iterdir())  # not even the good file
        assert not staging_dir(out).exists()

        # The same fetch through the real ssh works.
        b.config.rsync_ssh = sshd["ZMESH_RSYNC_SSH"]
        res = await DataClient(b).fetch(a.name, "f.bin", dest)
        assert res.method == "rsync" and sha(dest) == sha(src)


async def test_unreachable_sshd_falls_back_to_grpc_stream(
    tmp_path: Path, sshd: dict[str, str]
) -> None:
    def configure(i: int) -> dict[str, Any]:
        cfg = rsync_config(sshd)
        cfg["rsync_port"] = 1  # nothing listens there
        return cfg

    async with mesh(tmp_path, 2, configure=configure) as (a, b):
        src = write_random(a.data_dir / "f.bin", 50_000)
        dest = tmp_path / "got" / "f.bin"
        res = await DataClient(b).fetch(a.name, "f.bin", dest)
        assert res.method == "grpc-stream" and sha(dest) == sha(src)
        assert not staging_dir(dest).exists()


FLAKY_SSH = """
import os, sys
count = os.environ["ZM_COUNT"]
n = len(open(count).read()) if os.path.exists(count) else 0
open(count, "a").write("x")
if n == 0:
    sys.exit(12)  # as if the stream broke
args = sys.argv[1:]
os.execvp("ssh", ["ssh", *args])
"""


async def test_broken_rsync_connection_is_retried(
    tmp_path: Path, sshd: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with mesh(tmp_path, 2, configure=lambda i: rsync_config(sshd)) as (a, b):
        src = write_random(a.data_dir / "f.bin", 70_000)
        script = tmp_path / "flaky_ssh.py"
        script.write_text(FLAKY_SSH)
        monkeypatch.setenv("ZM_COUNT", str(tmp_path / "count"))
        ssh_opts = sshd["ZMESH_RSYNC_SSH"].split(" ", 1)[1]
        b.config.rsync_ssh = f"{sys.executable} {script} {ssh_opts}"
        dest = tmp_path / "got" / "f.bin"
        res = await DataClient(b).fetch(a.name, "f.bin", dest)
        assert res.method == "rsync" and sha(dest) == sha(src)
        assert (tmp_path / "count").read_text() == "xx"
