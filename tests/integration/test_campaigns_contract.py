"""Behaviour the .proto comments promise a client in any language: Watch ``follow``,
``client_request_id`` reuse, the types of ``detail`` values, the renamed self fields."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from tests.helpers.inproc import mesh
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2
INTEGER = re.compile(r"-?[0-9]+")
DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def shell(name: str, cmd: str, **kw: object) -> S.ActivitySpec:
    return S.ActivitySpec(name=name, shell=S.ShellSpec(cmd=cmd), **kw)  # type: ignore[arg-type]


async def test_watch_without_follow_ends_after_the_journaled_events(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1) as (agent,):
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [shell("first", "true"), shell("nap", "sleep 30", depends_on=["first"])]
            cid = (
                await stub.Submit(campaigns_pb2.SubmitRequest(name="w", activities=acts))
            ).campaign_id
            req = campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)
            seen: list[S.Event] = []
            async for ev in stub.Watch(req):  # follow until `nap` runs
                seen.append(ev)
                if ev.activity == "nap" and ev.state == S.ACTIVITY_STATE_RUNNING:
                    break
            # follow=false: what is journaled now, then the stream ends although it runs
            snapshot = campaigns_pb2.WatchRequest(campaign_id=cid, follow=False)
            now = [ev async for ev in stub.Watch(snapshot)]
            assert [e.seq for e in now] == list(range(1, len(now) + 1))
            assert len(now) >= len(seen)
            batches = [b async for b in stub.WatchBatches(snapshot)]
            assert [e.seq for b in batches for e in b.events][: len(now)] == [e.seq for e in now]
            status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid))
            assert status.state == S.CAMPAIGN_STATE_RUNNING and status.finished_unix_ms == 0
            # resume from the last seq received, following, after a cancel
            await stub.Cancel(campaigns_pb2.CancelCampaignRequest(campaign_id=cid))
            after = now[-1].seq
            rest = campaigns_pb2.WatchRequest(campaign_id=cid, after_seq=after, follow=True)
            tail = [ev async for ev in stub.Watch(rest)]
            assert [e.seq for e in tail] == list(range(after + 1, after + 1 + len(tail)))
            assert tail[-1].campaign_state == S.CAMPAIGN_STATE_CANCELLED
            done = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=cid))
            assert done.finished_unix_ms >= done.created_unix_ms > 0


async def test_client_request_id_reuse(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1) as (agent,):
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            req = campaigns_pb2.SubmitRequest(
                name="idem", activities=[shell("one", "true")], client_request_id="req-1"
            )
            first = await stub.Submit(req)
            again = await stub.Submit(req)  # a retry: the same campaign
            assert again.campaign_id == first.campaign_id
            other = campaigns_pb2.SubmitRequest(
                name="idem", activities=[shell("one", "false")], client_request_id="req-1"
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Submit(other)
            assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert first.campaign_id in (info.value.details() or "")
            listed = await stub.ListCampaigns(campaigns_pb2.ListCampaignsRequest())
            assert [c.campaign_id for c in listed.campaigns] == [first.campaign_id]


async def test_detail_values_parse_as_documented(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1) as (agent,):
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [shell("ok", "echo hi"), shell("bad", "echo oops >&2; exit 3")]
            cid = (
                await stub.Submit(campaigns_pb2.SubmitRequest(name="d", activities=acts))
            ).campaign_id
            req = campaigns_pb2.WatchRequest(campaign_id=cid, follow=True)
            events = [ev async for ev in stub.Watch(req)]
            members = await stub.ListMembers(campaigns_pb2.ListMembersRequest())
    checked = set()
    for ev in events:
        for key, value in ev.detail.items():
            if key in ("exit_code", "pid", "bytes"):
                assert INTEGER.fullmatch(value), (key, value)
            elif key in ("duration_s", "rate_mib_s"):
                assert DECIMAL.fullmatch(value), (key, value)
                float(value)
            checked.add(key)
    assert {"exit_code", "pid", "duration_s", "stderr_tail"} <= checked
    bad = [e for e in events if e.activity == "bad" and e.state == S.ACTIVITY_STATE_FAILED]
    assert int(bad[-1].detail["exit_code"]) == 3 and bad[-1].detail["stderr_tail"] == "oops\n"
    assert members.self_name == agent.name
    assert [m.name for m in members.members if m.is_self] == [agent.name]


def test_every_proto_names_its_package_for_other_languages() -> None:
    root = Path(__file__).resolve().parents[2] / "proto" / "zambeze_mesh" / "v1"
    files = sorted(root.glob("*.proto"))
    assert len(files) == 5
    for path in files:
        text = path.read_text()
        for option in (
            "go_package",
            "java_package",
            "java_multiple_files",
            "csharp_namespace",
            "ruby_package",
            "php_namespace",
        ):
            assert re.search(rf"^option {option} = ", text, re.M), (path.name, option)
        # no field is named after a keyword of Rust or Swift
        assert not re.search(r"^\s*\w+ (self|type|fn|struct|let|func|var)\s*=", text, re.M)
