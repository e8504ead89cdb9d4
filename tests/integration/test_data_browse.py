"""Campaigns ListData / StatData / ReadData: browsing agents' data as a client."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.helpers.inproc import mesh
from zambeze_mesh.agent.bootstrap import issue_client, open_store
from zambeze_mesh.agent.databrowse import check_browse
from zambeze_mesh.campaign.client import Client, connect
from zambeze_mesh.errors import InvalidInput, NotFound, NotPermitted
from zambeze_mesh.security.authz import Caller
from zambeze_mesh.security.identity import Identity

MiB = 1 << 20


async def read_all(client: Client, uri: str, offset: int = 0, size: int = 0) -> bytes:
    return b"".join([piece async for piece in client.read_data(uri, offset, size)])


def test_browse_rule_local_user_and_admins_only() -> None:
    alice = Identity.client("test", "alice")
    check_browse(Caller.local())
    check_browse(Caller.client(alice), admins=("alice",))
    check_browse(Caller.client(alice), admins=(alice.uri,))
    for caller, admins in [
        (Caller.client(alice), ()),
        (Caller.client(alice), ("bob",)),
        (Caller.agent(Identity.agent("test", "alice")), ("alice",)),
        (Caller.anonymous(), ("alice",)),
    ]:
        with pytest.raises(NotPermitted):
            check_browse(caller, admins)


async def test_list_stat_read_here_and_forwarded(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")

    def configure(i: int) -> dict[str, object]:
        return {"exported_roots": [str(export)]} if i == 1 else {}

    async with mesh(tmp_path, 2, configure=configure) as (a, b):
        (a.data_dir / "mine.txt").write_text("held by agent-0")
        blob = os.urandom(3 * MiB + 123)
        (b.data_dir / "runs").mkdir()
        (b.data_dir / "runs" / "blob.bin").write_bytes(blob)
        (b.data_dir / "runs" / "sub").mkdir()
        (b.data_dir / "notes.txt").write_text("hello")
        (export / "e.txt").write_text("exported")
        os.symlink(secret, b.data_dir / "escape")
        os.symlink(secret, b.data_dir / "runs" / "escape2")
        client = Client(f"unix:{a.home.socket}")
        try:
            # The agent's own data.
            entries, truncated = await client.list_data("agent-0://.")
            assert [(e.path, e.is_dir) for e in entries] == [("mine.txt", False)]
            assert not truncated
            assert await read_all(client, "agent-0://mine.txt") == b"held by agent-0"

            # Another agent's, forwarded over agent-0's identity.
            entries, _ = await client.list_data("agent-1://@agentdir")
            # Symlinks leaving the root are not listed at all.
            assert [(e.path, e.is_dir) for e in entries] == [
                ("notes.txt", False),
                ("runs", True),
            ]
            entries, _ = await client.list_data("agent-1://runs")
            assert [(e.path, e.is_dir, e.size) for e in entries] == [
                ("runs/blob.bin", False, len(blob)),
                ("runs/sub", True, 0),
            ]
            assert all(e.mtime_ns > 0 for e in entries)
            entries, truncated = await client.list_data("agent-1://runs", limit=1)
            assert len(entries) == 1 and truncated
            info = await client.stat_data("agent-1://runs/blob.bin")
            assert info.size == len(blob)
            assert info.sha256 == hashlib.sha256(blob).hexdigest()
            assert await read_all(client, "agent-1://runs/blob.bin") == blob
            part = await read_all(client, "agent-1://runs/blob.bin", MiB - 7, MiB + 100)
            assert part == blob[MiB - 7 : 2 * MiB + 93]
            assert await read_all(client, "agent-1://runs/blob.bin", len(blob)) == b""
            entries, _ = await client.list_data(f"agent-1://{export}")
            assert [e.path for e in entries] == [f"{export}/e.txt"]
            assert await read_all(client, f"agent-1://{export}/e.txt") == b"exported"
            # The same from the agent's own socket, served without forwarding.
            own = Client(f"unix:{b.home.socket}")
            try:
                assert await read_all(own, "agent-1://runs/blob.bin", 5, 10) == blob[5:15]
            finally:
                await own.close()

            # Refusals, here and at the holder.
            for holder in ("agent-0", "agent-1"):
                with pytest.raises(NotPermitted):
                    await client.list_data(f"{holder}:///etc")
                with pytest.raises(NotPermitted):
                    await read_all(client, f"{holder}:///etc/passwd")
                with pytest.raises(NotFound):
                    await client.stat_data(f"{holder}://no/such/file")
            with pytest.raises(InvalidInput):  # '..' never reaches a sandbox
                await client.list_data("agent-1://runs/../..")
            with pytest.raises(InvalidInput):
                await read_all(client, "agent-1://runs/%2e%2e/../x")
            with pytest.raises(NotPermitted):  # symlink escapes
                await read_all(client, "agent-1://escape")
            with pytest.raises(NotPermitted):
                await client.stat_data("agent-1://runs/escape2")
            with pytest.raises(NotPermitted):
                await client.list_data("agent-1://escape")
            with pytest.raises(InvalidInput):  # a directory is listed, not read
                await read_all(client, "agent-1://runs")
            with pytest.raises(InvalidInput):
                await read_all(client, "agent-1://runs/blob.bin", len(blob) + 1)
            with pytest.raises(NotFound):
                await client.list_data("nobody://x")
            for bad in ("", "file:///etc", "@agentdir/x", "agent-1://@workingdir/x"):
                with pytest.raises(InvalidInput):
                    await client.list_data(bad)
        finally:
            await client.close()


async def test_remote_clients_are_refused(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1) as (a,):
        (a.data_dir / "f.txt").write_text("x")
        store = open_store(a.home)
        try:
            bundle = issue_client(store, "alice", tmp_path / "alice")
        finally:
            store.close()
        remote = connect(
            a.address,
            cert=bundle.cert,
            key=bundle.key,
            ca=bundle.ca,
            server_name="127.0.0.1",
            set_default=False,
        )
        try:
            assert (await remote.list_members()).self_name == "agent-0"  # the client is valid
            for call in (
                remote.list_data("agent-0://."),
                remote.stat_data("agent-0://f.txt"),
                read_all(remote, "agent-0://f.txt"),
            ):
                with pytest.raises(NotPermitted, match="may not browse data"):
                    await call
        finally:
            await remote.close()
