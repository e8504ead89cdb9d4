"""Provenance Run Crates of real campaigns on an in-process mesh of 3 agents.

A diamond (shell A -> transfer B and function C -> shell D) runs over the three
agents; A fails once and is retried. Its crate must validate against the
Provenance Run Crate profile (roc-validator, offline), load with ``rocrate``, and
say exactly what happened: every attempt once, every output's sha256 equal to the
file on its agent, inputs linked to the actions that produced them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.inproc import mesh
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.campaign.activities import PythonActivity, ShellActivity, TransferActivity
from zambeze_mesh.campaign.client import Client
from zambeze_mesh.errors import InvalidInput, NotFound
from zambeze_mesh.provenance.export import export_crate
from zambeze_mesh.provenance.validate import validate
from zambeze_mesh.v1 import common_pb2

pytest.importorskip("rocrate")

S = common_pb2


def summarize(scale: int, api_token: str = "") -> int:
    """C: count the lines of A's output and write them, scaled, to its output dir."""
    src = Path(os.environ["ZMESH_INPUT_0"]) / "a.txt"
    n = len(src.read_text().splitlines()) * scale
    Path(os.environ["ZMESH_OUTPUT_DIR"], "count.txt").write_text(f"{n}\n")
    return n


def diamond(tmp: Path) -> list[Any]:
    a = ShellActivity(
        "A",
        cmd=(
            'if [ "$ZMESH_ATTEMPT" = 1 ]; then echo first try fails >&2; exit 3; fi; '
            'cp "$ZMESH_INPUT_0" "$ZMESH_OUTPUT_DIR/a.txt" && echo "A $MODE" >> '
            '"$ZMESH_OUTPUT_DIR/a.txt"'
        ),
        env={"MODE": "fast", "DB_PASSWORD": "hunter2"},
        data_uris=["agent-0://raw.txt"],
        agent="agent-1",
        retries=1,
    )
    b = TransferActivity("B", source="@output:A", dest="agent-2://moved/")
    c = PythonActivity(
        "C",
        func=summarize,
        args=[10],
        kwargs={"api_token": "s3cr3t"},
        data_uris=["@output:A"],
        output_dir="@workingdir/C-out",
        agent="agent-0",
    )
    d = ShellActivity(
        "D",
        cmd='cat "$ZMESH_INPUT_0"/A/a.txt "$ZMESH_INPUT_1"/count.txt > "$ZMESH_OUTPUT_DIR/d.txt"',
        data_uris=["agent-2://moved", "@output:C"],
        depends_on=["B"],
        agent="agent-2",
    )
    return [a, b, c, d]


async def run(agent: Agent, acts: list[Any]) -> tuple[Client, str, list[S.Event]]:
    client = Client(f"unix:{agent.home.socket}")
    res = await client.submit("diamond", acts)
    events = [ev async for ev in client.watch(res.campaign_id)]
    return client, res.campaign_id, events


def graph(crate_dir: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((crate_dir / "ro-crate-metadata.json").read_text())
    return {e["@id"]: e for e in doc["@graph"]}


def ids(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [i["@id"] for i in items]


def types(entity: dict[str, Any]) -> set[str]:
    t = entity["@type"]
    return set(t if isinstance(t, list) else [t])


def sha_of(uri: str) -> str:
    path = Path(uri.split("://", 1)[1])
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_diamond_crate_validates_and_matches_what_happened(tmp_path: Path) -> None:
    async with mesh(tmp_path, 3) as agents:
        (agents[0].data_dir / "raw.txt").write_text("line 1\nline 2\n")
        client, cid, events = await run(agents[0], diamond(tmp_path))
        assert events[-1].campaign_state == "SUCCEEDED", [e.message for e in events]
        out = tmp_path / "crate"
        await export_crate(cid, out, client=client)
        zipped = await export_crate(cid, tmp_path / "crate.zip", client=client)
        await client.close()

    report = validate(out)
    assert report.passed, report.summary()
    assert validate(zipped).passed

    from rocrate.rocrate import ROCrate

    loaded = ROCrate(out)
    assert loaded.mainEntity is not None and loaded.mainEntity.id == "campaign.json"
    g = graph(out)

    # Every attempt that had an agent is one CreateAction, once.
    happened = {(e.activity, e.attempt) for e in events if e.activity and e.agent}
    attempts = {k: v for k, v in g.items() if k.startswith("#attempt-")}
    seen = {(v["name"].split(" ")[0], v["attempt"]) for v in attempts.values()}
    assert seen == happened == {("A", 1), ("A", 2), ("B", 1), ("C", 1), ("D", 1)}
    assert len(attempts) == len(happened)
    agent_of = {(e.activity, e.attempt): e.agent for e in events if e.agent}
    for eid, entity in attempts.items():
        act, n = entity["name"].split(" ")[0], entity["attempt"]
        assert "CreateAction" in types(entity)
        assert ids(entity["agent"]) == [f"spiffe://test/agent/{agent_of[(act, n)]}"]
        assert ids(entity["instrument"]) == [f"#tool-{act}"]
        control = g[f"#control-{act}-{n}"]
        assert ids(control["object"]) == [eid] and ids(control["instrument"]) == [f"#step-{act}"]
    failed = g["#attempt-A-1"]
    assert failed["actionStatus"] == "http://schema.org/FailedActionStatus"
    assert failed["exitCode"] == 3 and "first try fails" not in failed.get("name", "")
    assert "failed" in failed["error"]
    assert g["#attempt-A-2"]["actionStatus"] == "http://schema.org/CompletedActionStatus"
    assert g["#attempt-A-2"]["retries"] == 1
    assert set(ids(g["#orchestration"]["object"])) == {f"#control-{a}-{n}" for a, n in happened}

    # Every output file's sha256 equals the file on its agent.
    outputs = [
        g[i] for a in attempts.values() for i in ids(a.get("result")) if "File" in types(g[i])
    ]
    names = {Path(o["@id"]).name for o in outputs}
    assert {"a.txt", "count.txt", "d.txt"} <= names
    for o in outputs:
        assert o["sha256"] == sha_of(o["@id"]), o["@id"]
        assert int(o["contentSize"]) == Path(o["@id"].split("://", 1)[1]).stat().st_size
        assert o["creativeWorkStatus"] == "Available"

    # Inputs are linked to the actions that produced them.
    def producers(eid: str) -> set[str]:
        return {k for k, a in attempts.items() if eid in ids(a.get("result"))}

    raw = [i for i in ids(g["#attempt-A-2"]["object"]) if i.endswith("raw.txt")]
    assert raw and producers(raw[0]) == set()  # an external input of the run
    assert raw[0] in ids(g["#run"]["object"])
    assert g[raw[0]]["sha256"] == hashlib.sha256(b"line 1\nline 2\n").hexdigest()
    for consumer, producer in (("B", "A-2"), ("C", "A-2"), ("D", "B-1"), ("D", "C-1")):
        inputs = [i for i in ids(g[f"#attempt-{consumer}-1"]["object"]) if "://" in i]
        assert any(f"#attempt-{producer}" in producers(i) for i in inputs), (consumer, inputs)

    # The transfer: method, bytes and rate as resource usage; source and destination.
    usage = {g[u]["name"]: g[u]["value"] for u in ids(g["#attempt-B-1"]["resourceUsage"])}
    assert usage["transfer0-method"] in ("grpc-stream", "tls-stream", "rsync")
    assert int(usage["transfer0-bytes"]) > 0 and "transfer0-rate" in usage

    # Code: the shell command, the shipped function (name, source, blob digest).
    assert "cp " in g["#tool-A"]["text"]
    tool_c = g["#tool-C"]
    assert tool_c["alternateName"].endswith(":summarize")
    assert "def summarize" in tool_c["text"] and len(tool_c["sha256"]) == 64

    # Parameters, with secrets left out.
    params = {
        g[i]["name"]: g[i]["value"]
        for a in attempts.values()
        for i in ids(a.get("object"))
        if "PropertyValue" in types(g[i])
    }
    assert params["env.MODE"] == "fast" and params["args[0]"] == "10"
    text = (out / "ro-crate-metadata.json").read_text() + (out / "campaign.json").read_text()
    assert "hunter2" not in text and "s3cr3t" not in text
    assert "DB_PASSWORD" not in params and "api_token" not in params


async def test_missing_output_is_reported_not_fatal(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as agents:
        acts = [
            ShellActivity(
                "make",
                cmd='cd "$ZMESH_OUTPUT_DIR"; echo hi >keep.txt; echo x >gone.txt; echo a >edit.txt',
                agent="agent-1",
            )
        ]
        client, cid, events = await run(agents[0], acts)
        assert events[-1].campaign_state == "SUCCEEDED"
        next(agents[1].data_dir.rglob("gone.txt")).unlink()
        next(agents[1].data_dir.rglob("edit.txt")).write_text("changed since\n")
        out = await export_crate(cid, tmp_path / "crate", client=client)
        await client.close()
    g = graph(out)
    files = {Path(k).name: v for k, v in g.items() if k.startswith("agent-1://")}
    assert files["gone.txt"]["creativeWorkStatus"].startswith("Missing")
    assert files["keep.txt"]["creativeWorkStatus"] == "Available"
    edited = files["edit.txt"]
    assert edited["creativeWorkStatus"].startswith("Modified")
    assert edited["sha256"] == hashlib.sha256(b"a\n").hexdigest()  # as it was produced
    assert validate(out).passed


async def test_bad_inputs(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1) as agents:
        client, cid, _ = await run(agents[0], [ShellActivity("one", cmd="true")])
        with pytest.raises(NotFound):
            await export_crate("0123456789abcdef", tmp_path / "x", client=client)
        with pytest.raises(InvalidInput):
            await export_crate("", tmp_path / "x", client=client)
        busy = tmp_path / "busy"
        busy.mkdir()
        (busy / "file").write_text("keep me")
        with pytest.raises(InvalidInput):
            await export_crate(cid, busy, client=client)
        assert (busy / "file").read_text() == "keep me"
        await client.close()


CAMPAIGN = """
import sys
import zambeze_mesh as zm

campaign = zm.Campaign("cli provenance")
make = zm.ShellActivity("make", cmd="echo 21 > $ZMESH_OUTPUT_DIR/n.txt", agent="b")
use = zm.ShellActivity(
    "use", cmd="cat $ZMESH_INPUT_0/n.txt > $ZMESH_OUTPUT_DIR/copy.txt", data_uris=[make.output_dir]
)
campaign.add_activities([make, use])
print("CAMPAIGN", campaign.dispatch())
campaign.wait()
print("CRATE", campaign.provenance(sys.argv[1]))
"""


def test_cli_and_campaign_api_export_crates(procmesh: Any, tmp_path: Path) -> None:
    from tests.helpers.procs import zmesh

    a = procmesh.init("a")
    a.start()
    b = procmesh.join("b", a)
    b.start()
    procmesh.wait_for(lambda: len(a.statuses()) == 2 and len(b.statuses()) == 2, 30, "mesh")
    script = tmp_path / "campaign.py"
    script.write_text(CAMPAIGN)
    api_crate = tmp_path / "api-crate"
    out = zmesh("run", str(script), str(api_crate), home=a.home, timeout=120).stdout
    cid = next(line.split()[1] for line in out.splitlines() if line.startswith("CAMPAIGN"))
    assert graph(api_crate)["#attempt-make-1"]["exitCode"] == 0

    zipped = tmp_path / "crate.zip"
    res = zmesh(
        "provenance",
        cid,
        "--out",
        str(zipped),
        "--with-data",
        "--validate",
        home=a.home,
        timeout=300,
    )
    assert "valid" in res.stdout and zipped.is_file()
    import zipfile

    with zipfile.ZipFile(zipped) as z:
        names = z.namelist()
        copy = next(n for n in names if n.startswith("data/") and n.endswith("copy.txt"))
        assert z.read(copy) == b"21\n"
        doc = json.loads(z.read("ro-crate-metadata.json"))
    entity = next(e for e in doc["@graph"] if e["@id"] == copy)
    assert (
        entity["identifier"].startswith("a://")
        and entity["sha256"] == hashlib.sha256(b"21\n").hexdigest()
    )

    bad = zmesh(
        "provenance", "0123456789abcdef", "--out", str(tmp_path / "x"), home=a.home, check=False
    )
    assert bad.returncode != 0 and "no campaign" in bad.stderr


async def test_campaign_of_another_client_is_refused(tmp_path: Path) -> None:
    import grpc

    from zambeze_mesh.agent.bootstrap import issue_client, open_store
    from zambeze_mesh.errors import NotPermitted

    async with mesh(tmp_path, 1) as agents:
        store = open_store(agents[0].home)
        try:
            bundles = [issue_client(store, n, tmp_path / n) for n in ("alice", "mallory")]
        finally:
            store.close()
        clients = [
            Client(
                agents[0].address,
                grpc.ssl_channel_credentials(
                    b.ca.read_bytes(), b.key.read_bytes(), b.cert.read_bytes()
                ),
            )
            for b in bundles
        ]
        alice, mallory = clients
        res = await alice.submit("mine", [ShellActivity("one", cmd="true")])
        _ = [ev async for ev in alice.watch(res.campaign_id)]
        await export_crate(res.campaign_id, tmp_path / "ok", client=alice)
        try:
            with pytest.raises((NotFound, NotPermitted)):
                await export_crate(res.campaign_id, tmp_path / "stolen", client=mallory)
            assert not (tmp_path / "stolen").exists()
        finally:
            for c in clients:
                await c.close()


async def test_running_campaign_exports_what_happened_so_far(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as agents:
        client = Client(f"unix:{agents[0].home.socket}")
        res = await client.submit(
            "slow",
            [
                ShellActivity("quick", cmd='echo 1 > "$ZMESH_OUTPUT_DIR/one.txt"', agent="agent-1"),
                ShellActivity("slow", cmd="sleep 60", depends_on=["quick"], agent="agent-1"),
            ],
        )
        async for ev in client.watch(res.campaign_id):
            if ev.activity == "slow" and ev.state == "RUNNING":
                break
        out = await export_crate(res.campaign_id, tmp_path / "crate", client=client)
        await client.cancel(res.campaign_id)
        await client.close()
    assert validate(out).passed
    g = graph(out)
    assert g["#attempt-quick-1"]["actionStatus"] == "http://schema.org/CompletedActionStatus"
    running = g["#attempt-slow-1"]
    assert running["actionStatus"] == "http://schema.org/ActiveActionStatus"
    assert "endTime" not in running and "endTime" not in g["#run"]
    assert g["#run"]["actionStatus"] == "http://schema.org/ActiveActionStatus"
