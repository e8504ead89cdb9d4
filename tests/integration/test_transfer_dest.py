"""TransferActivity ``dest`` has ``cp`` semantics (real in-process agents, gRPC, mTLS)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.files import sha, write_random
from tests.helpers.inproc import mesh
from tests.integration.test_transfer_activity import by_name, run, transfer
from zambeze_mesh.v1 import common_pb2 as S

KiB = 1 << 10


async def test_dest_names_a_path_or_a_directory_like_cp(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as (a, b):
        src = write_random(a.data_dir / "input.bin", 40 * KiB)
        ds = a.data_dir / "ds"
        write_random(ds / "x.bin", 3 * KiB)
        write_random(ds / "sub" / "y.bin", 2 * KiB)
        (b.data_dir / "existing").mkdir()
        status, _ = await run(
            b,
            [
                # a path that does not exist: the file gets exactly that name
                transfer("named", f"{a.name}://input.bin", f"{b.name}://copy/input.bin"),
                transfer("renamed", f"{a.name}://input.bin", f"{b.name}://copy/other.bin"),
                # an existing directory, or a trailing '/': inside it, source basename
                transfer("into", f"{a.name}://input.bin", f"{b.name}://existing"),
                transfer("slash", f"{a.name}://input.bin", f"{b.name}://fresh/"),
                # a directory to a new path: the copy is that directory
                transfer("tree", f"{a.name}://ds", f"{b.name}://mirror"),
            ],
        )
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
        d = b.data_dir
        assert (d / "copy" / "input.bin").is_file()  # not copy/input.bin/input.bin
        assert sha(d / "copy" / "input.bin") == sha(src) == sha(d / "copy" / "other.bin")
        assert sorted(p.name for p in (d / "copy").iterdir()) == ["input.bin", "other.bin"]
        assert sha(d / "existing" / "input.bin") == sha(src)
        assert sha(d / "fresh" / "input.bin") == sha(src)
        assert sha(d / "mirror" / "x.bin") == sha(ds / "x.bin")
        assert sha(d / "mirror" / "sub" / "y.bin") == sha(ds / "sub" / "y.bin")
        got = by_name(status)
        assert got["named"].detail["path"] == str(d / "copy" / "input.bin")
        assert got["named"].detail["output_dir"] == str(d / "copy")
        assert got["slash"].detail["path"] == str(d / "fresh" / "input.bin")
