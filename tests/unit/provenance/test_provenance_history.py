"""The journal read back as attempts, the secret rule, and the crate builder's guards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.provenance.history import history_of
from zambeze_mesh.provenance.params import REDACTED, function_info, is_secret, public_params
from zambeze_mesh.v1 import campaigns_pb2, common_pb2

S = common_pb2


def ev(seq: int, activity: str, state: int, attempt: int = 1, **kw: object) -> S.Event:
    detail = kw.pop("detail", {})
    e = S.Event(
        seq=seq,
        campaign_id="c1",
        activity=activity,
        state=state,
        attempt=attempt,
        time_unix_ms=1000 * seq,
        **kw,
    )  # type: ignore[arg-type]
    e.detail.update(detail)  # type: ignore[arg-type]
    return e


def record() -> campaigns_pb2.ProvenanceRecord:
    rec = campaigns_pb2.ProvenanceRecord(mesh="m", finished_unix_ms=9000)
    rec.status.campaign_id = "c1"
    rec.status.name = "demo"
    rec.status.state = S.CAMPAIGN_STATE_SUCCEEDED
    for name in ("a", "b"):
        rec.activities.add(name=name, shell=S.ShellSpec(cmd="true", env={"K": "v"}), retries=1)
    inputs = json.dumps(
        [{"uri": "b://in.txt", "path": "/d/in.txt", "size": "3", "sha256": "ab", "role": "input"}]
    )
    outputs = json.dumps([["o.txt", 2, "cd"]])
    rec.events.extend(
        [
            S.Event(
                seq=1, campaign_id="c1", campaign_state=S.CAMPAIGN_STATE_RUNNING, time_unix_ms=500
            ),
            ev(2, "a", S.ACTIVITY_STATE_BIDDING),
            ev(3, "a", S.ACTIVITY_STATE_AWARDED, agent="x"),
            ev(4, "a", S.ACTIVITY_STATE_RUNNING, agent="x"),
            ev(
                5,
                "a",
                S.ACTIVITY_STATE_RETRYING,
                attempt=2,
                message="attempt 1 failed: boom",
                detail={"exit_code": "3"},
            ),
            ev(6, "a", S.ACTIVITY_STATE_AWARDED, attempt=2, agent="y"),
            ev(
                7,
                "a",
                S.ACTIVITY_STATE_STAGING,
                attempt=2,
                agent="y",
                detail={
                    "uri": "b://in.txt",
                    "bytes": "3",
                    "method": "grpc-stream",
                    "rate_mib_s": "1.0",
                },
            ),
            ev(
                8,
                "a",
                S.ACTIVITY_STATE_SUCCEEDED,
                attempt=2,
                agent="y",
                detail={
                    "exit_code": "0",
                    "inputs": inputs,
                    "outputs": outputs,
                    "outputs_dir": "/y/out",
                    "output_dir": "/y/out",
                    "plugin": "shell",
                },
            ),
            ev(9, "b", S.ACTIVITY_STATE_SKIPPED),
            S.Event(
                seq=10,
                campaign_id="c1",
                campaign_state=S.CAMPAIGN_STATE_SUCCEEDED,
                time_unix_ms=9000,
            ),
        ]
    )
    return rec


def test_attempts_folded_from_events() -> None:
    h = history_of(record())
    a1, a2 = h.by_activity("a")
    assert (a1.number, a1.agent, a1.state, a1.exit_code) == (1, "x", "FAILED", 3)
    assert a1.message == "attempt 1 failed: boom" and a1.end_ms == 5000
    assert (a2.number, a2.agent, a2.state, a2.exit_code, a2.plugin) == (
        2,
        "y",
        "SUCCEEDED",
        0,
        "shell",
    )
    assert [(t.uri, t.bytes, t.method) for t in a2.transfers] == [("b://in.txt", 3, "grpc-stream")]
    assert [(i.uri, i.size, i.sha256) for i in a2.inputs] == [("b://in.txt", 3, "ab")]
    assert [(o.uri, o.size, o.sha256) for o in a2.outputs] == [("y:///y/out/o.txt", 2, "cd")]
    assert a2.output_root == "y:///y/out"
    (b,) = h.by_activity("b")
    assert b.state == "SKIPPED" and not b.agent
    assert (h.state, h.start_ms, h.end_ms) == ("SUCCEEDED", 500, 9000)


def test_garbled_digest_details_are_ignored() -> None:
    rec = record()
    rec.events[7].detail["inputs"] = "not json"
    rec.events[7].detail["outputs"] = json.dumps([["only two", 1], 5, None])
    a2 = history_of(rec).by_activity("a")[1]
    assert a2.inputs == [] and a2.outputs == [] and a2.state == "SUCCEEDED"


def test_secret_rule() -> None:
    for name in (
        "DB_PASSWORD",
        "api_token",
        "AWS_SECRET_ACCESS_KEY",
        "apiKey",
        "Auth",
        "passwd",
        "private-key",
        "GITHUB_TOKEN",
        "credentials",
    ):
        assert is_secret(name), name
    for name in ("MODE", "threads", "input_path", "seed"):
        assert not is_secret(name), name
    assert public_params({"MODE": "x", "MY_TOKEN": "t", "k": REDACTED}) == {"MODE": "x"}


def _double(x: int, *, api_key: str = "", scale: int = 1) -> int:
    return 2 * x * scale


def test_function_info_names_source_and_redacts() -> None:
    name, source, params = function_info(_double, [21], {"api_key": "s3cr3t", "scale": 2})
    assert name.endswith("test_provenance_history:_double")
    assert "def _double" in source
    assert params == {"args[0]": "21", "api_key": REDACTED, "scale": "2"}
    _, source, _ = function_info(len, ["x" * 5000], None)
    assert source == ""  # a builtin has no source
    assert len(function_info(len, ["x" * 5000], None)[2]["args[0]"]) <= 1024


def test_build_crate_refuses_bad_targets(tmp_path: Path) -> None:
    pytest.importorskip("rocrate")
    from zambeze_mesh.provenance.crate import build_crate

    with pytest.raises(InvalidInput):
        build_crate(campaigns_pb2.ProvenanceRecord(), out=tmp_path / "x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "f").write_text("keep")
    with pytest.raises(InvalidInput):
        build_crate(record(), out=busy)
    (tmp_path / "d.zip").mkdir()
    with pytest.raises(InvalidInput):
        build_crate(record(), out=tmp_path / "d.zip")
    out = build_crate(record(), out=tmp_path / "ok")
    graph = {
        e["@id"]: e for e in json.loads((out / "ro-crate-metadata.json").read_text())["@graph"]
    }
    assert {"#attempt-a-1", "#attempt-a-2"} <= set(graph) and "#attempt-b-1" not in graph
