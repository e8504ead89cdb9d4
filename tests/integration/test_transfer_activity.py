"""TransferActivity and cross-agent inputs on real in-process meshes (gRPC, mTLS, files).

Campaigns are submitted on agent-0 over its Unix socket; data moves between the
other agents. Movement is counted twice: STAGING events (requester side) and hooks
on every holder that see each outgoing ``Fetch`` chunk (the Data servicer's ``fault``) and
``tls-stream`` frame (``tls_data_fault``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from tests.helpers.files import sha, write_random
from tests.helpers.inproc import mesh
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.agent.servicers.data import DataFault
from zambeze_mesh.data.tlsserve import FrameFault
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2, data_pb2

S = common_pb2
KiB = 1 << 10


def transfer(name: str, source: str, dest: str, **kw: Any) -> S.ActivitySpec:
    return S.ActivitySpec(name=name, transfer=S.TransferSpec(source=source, dest=dest), **kw)


def shell(name: str, cmd: str, **kw: Any) -> S.ActivitySpec:
    return S.ActivitySpec(name=name, shell=S.ShellSpec(cmd=cmd), **kw)


async def run(
    agent: Agent, acts: list[S.ActivitySpec]
) -> tuple[campaigns_pb2.CampaignStatus, list[S.Event]]:
    async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        resp = await stub.Submit(campaigns_pb2.SubmitRequest(name="t", activities=acts))
        req = campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
        events = [ev async for ev in stub.Watch(req)]
        status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id))
    return status, events


def by_name(status: campaigns_pb2.CampaignStatus) -> dict[str, campaigns_pb2.ActivityStatus]:
    return {a.name: a for a in status.activities}


def staged(events: list[S.Event]) -> Counter[str]:
    """Completed staging fetches per activity (events with a byte count)."""
    return Counter(
        e.activity for e in events if e.state == S.ACTIVITY_STATE_STAGING and "bytes" in e.detail
    )


class Served:
    """Counts Fetch streams / data connections and bytes each holder sends (hooks on
    every agent: grpc-stream chunks and tls-stream frames)."""

    def __init__(self, agents: list[Agent]) -> None:
        self.streams: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        for a in agents:
            a.data_servicer.fault = self._hook(a.name)
            a.tls_data_fault = self._frames(a.name)  # type: ignore[attr-defined]

    def _frames(self, name: str) -> FrameFault:
        def hook(index: int, offset: int, data: memoryview) -> None:
            if index == 0:
                self.streams[name] += 1
            self.bytes[name] += len(data)

        return hook

    def _hook(self, name: str) -> DataFault:
        def hook(index: int, chunk: data_pb2.Chunk) -> data_pb2.Chunk:
            if index == 0:
                self.streams[name] += 1
            self.bytes[name] += len(chunk.data)
            return chunk

        return hook


async def test_transfer_b_to_c_started_on_a_lands_dir_and_file(tmp_path: Path) -> None:
    async with mesh(tmp_path, 3) as agents:
        a, b, c = agents
        served = Served(agents)
        ds = b.data_dir / "ds"
        files = {"x.bin": 70 * KiB, "y.bin": 3 * KiB, "sub/z.bin": 130 * KiB, "e.txt": 0}
        for rel, n in files.items():
            write_random(ds / rel, n)
        single = write_random(b.data_dir / "single.bin", 333 * KiB)
        status, events = await run(
            a,
            [
                transfer("dir", f"{b.name}://ds", f"{c.name}://user/repository/"),
                transfer("file", f"{b.name}://single.bin", f"{c.name}://user/repository/"),
            ],
        )
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
        got = by_name(status)
        assert got["dir"].agent == c.name and got["file"].agent == c.name
        repo = c.data_dir / "user" / "repository"
        for rel in files:
            assert sha(repo / "ds" / rel) == sha(ds / rel), rel
        assert sha(repo / "single.bin") == sha(single)
        assert sorted(p.name for p in repo.iterdir()) == ["ds", "single.bin"]  # no leftovers
        assert staged(events) == {"dir": 1, "file": 1}
        assert served.bytes[b.name] == sum(files.values()) + single.stat().st_size
        assert served.bytes[a.name] == served.bytes[c.name] == 0
        done = [e for e in events if e.state == S.ACTIVITY_STATE_STAGING and "method" in e.detail]
        assert {e.detail["method"] for e in done} == {"tls-stream"}
        assert all(float(e.detail["rate_mib_s"]) > 0 for e in done)


async def test_transfer_source_as_output_ref_and_local_copy(tmp_path: Path) -> None:
    async with mesh(tmp_path, 3) as agents:
        a, b, c = agents
        status, events = await run(
            a,
            [
                shell(
                    "make",
                    "head -c 50000 /dev/urandom > $ZMESH_OUTPUT_DIR/m.bin; "
                    "mkdir $ZMESH_OUTPUT_DIR/d; echo hi > $ZMESH_OUTPUT_DIR/d/h.txt",
                    agent=b.name,
                ),
                transfer("ship", "@output:make", f"{c.name}://user/repository/"),
                transfer("one", "@output:make/d/h.txt", f"{c.name}://user/repository/"),
                # A transfer within agent-2 copies (it is not a no-op).
                transfer(
                    "again",
                    f"{c.name}://user/repository/make",
                    f"{c.name}://archive",  # cp-like: the copy is named archive
                    depends_on=["ship"],
                ),
            ],
        )
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
        out = Path(by_name(status)["make"].detail["output_dir"])
        repo = c.data_dir / "user" / "repository"
        assert sha(repo / "make" / "m.bin") == sha(out / "m.bin")
        assert (repo / "make" / "d" / "h.txt").read_text() == "hi\n"
        assert (repo / "h.txt").read_text() == "hi\n"
        assert sha(c.data_dir / "archive" / "m.bin") == sha(out / "m.bin")
        methods = {
            e.activity: e.detail["method"]
            for e in events
            if e.state == S.ACTIVITY_STATE_STAGING and "method" in e.detail
        }
        assert methods == {"ship": "tls-stream", "one": "tls-stream", "again": "local-copy"}


async def test_transfer_outside_the_sandbox_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    async with mesh(tmp_path, 2) as (a, b):
        write_random(a.data_dir / "f.bin", 100)
        status, _ = await run(a, [transfer("bad", f"{a.name}://f.bin", f"{b.name}://{outside}")])
        assert status.state == S.CAMPAIGN_STATE_FAILED
        assert not outside.exists()
        status, _ = await run(a, [transfer("bad2", f"{b.name}:///etc/hostname", f"{b.name}://x")])
        assert status.state == S.CAMPAIGN_STATE_FAILED
        assert not (b.data_dir / "x" / "hostname").exists()


CHAIN_STEP = (
    'cat "$ZMESH_INPUT_0/d.bin" > "$ZMESH_OUTPUT_DIR/d.bin"; echo {i} >> "$ZMESH_OUTPUT_DIR/d.bin"'
)


async def test_chain_over_four_agents_moves_each_intermediate_once(tmp_path: Path) -> None:
    async with mesh(tmp_path, 4) as agents:
        served = Served(agents)
        acts = [
            shell("s0", "head -c 300000 /dev/urandom > $ZMESH_OUTPUT_DIR/d.bin", agent="agent-0")
        ]
        for i in range(1, 4):
            acts.append(
                shell(
                    f"s{i}",
                    CHAIN_STEP.format(i=i),
                    data_uris=[f"@output:s{i - 1}"],
                    agent=f"agent-{i}",
                )
            )
        status, events = await run(agents[0], acts)
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
        got = by_name(status)
        assert [got[f"s{i}"].agent for i in range(4)] == [f"agent-{i}" for i in range(4)]
        first = (Path(got["s0"].detail["output_dir"]) / "d.bin").read_bytes()
        final = (Path(got["s3"].detail["output_dir"]) / "d.bin").read_bytes()
        assert final == first + b"1\n2\n3\n"
        # Each intermediate moved exactly once: one staging fetch per consumer ...
        assert staged(events) == {"s1": 1, "s2": 1, "s3": 1}
        sizes = {f"s{i}": str(len(first) + 2 * i) for i in range(3)}
        for e in events:
            if e.state == S.ACTIVITY_STATE_STAGING and "bytes" in e.detail:
                producer = f"s{int(e.activity[1:]) - 1}"
                assert e.detail["bytes"] == sizes[producer], e
        # ... and one Fetch stream, of exactly its bytes, served by each producer.
        assert served.streams == Counter({"agent-0": 1, "agent-1": 1, "agent-2": 1})
        assert dict(+served.bytes) == {f"agent-{i}": len(first) + 2 * i for i in range(3)}


READ_BOTH = (
    'sha256sum "$ZMESH_INPUT_0" "$ZMESH_INPUT_1" "$ZMESH_INPUT_2/p.bin" '
    "| cut -d' ' -f1 > $ZMESH_OUTPUT_DIR/sums"
)


async def test_activity_reads_remote_agentdir_paths_and_another_output(tmp_path: Path) -> None:
    async with mesh(tmp_path, 3) as agents:
        a, b, c = agents
        rel = write_random(b.data_dir / "input.bin", 200 * KiB)
        absolute = write_random(b.data_dir / "sub" / "in2.bin", 10 * KiB)
        status, events = await run(
            a,
            [
                shell("prod", "head -c 77777 /dev/urandom > $ZMESH_OUTPUT_DIR/p.bin", agent=c.name),
                shell(
                    "use",
                    READ_BOTH,
                    data_uris=[f"{b.name}://input.bin", f"{b.name}://{absolute}", "@output:prod"],
                    agent=a.name,
                ),
            ],
        )
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
        got = by_name(status)
        prod = Path(got["prod"].detail["output_dir"]) / "p.bin"
        sums = (Path(got["use"].detail["output_dir"]) / "sums").read_text().split()
        assert sums == [sha(rel), sha(absolute), sha(prod)]
        assert staged(events) == {"use": 3}


async def test_transfer_between_rsync_agents_uses_rsync(tmp_path: Path) -> None:
    from tests.integration.test_data_rsync import rsync_config, start_sshd

    cfg = rsync_config(start_sshd())
    async with mesh(tmp_path, 3, configure=lambda i: cfg if i else {}) as agents:
        a, b, c = agents
        served = Served(agents)
        ds = b.data_dir / "ds"
        for rel, n in {"x.bin": 90 * KiB, "sub/y.bin": 5 * KiB}.items():
            write_random(ds / rel, n)
        status, events = await run(
            a, [transfer("r", f"{b.name}://ds", f"{c.name}://user/repository/")]
        )
        assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
        repo = c.data_dir / "user" / "repository" / "ds"
        assert sha(repo / "x.bin") == sha(ds / "x.bin")
        assert sha(repo / "sub" / "y.bin") == sha(ds / "sub" / "y.bin")
        done = [e for e in events if e.state == S.ACTIVITY_STATE_STAGING and "method" in e.detail]
        assert [e.detail["method"] for e in done] == ["rsync"]
        assert done[0].detail["bytes"] == str(95 * KiB)
        assert not served.bytes  # nothing went over the Data service's Fetch
