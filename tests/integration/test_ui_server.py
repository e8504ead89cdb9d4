"""The web view's HTTP API against a real in-process agent (its Unix socket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers.inproc import mesh
from tests.helpers.procs import zmesh
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.campaign.activities import ShellActivity
from zambeze_mesh.campaign.client import Client
from zambeze_mesh.ui.server import UiServer


class Http:
    def __init__(self, server: UiServer) -> None:
        self.base = f"http://127.0.0.1:{server.port}"
        self.token = server.token

    def _do(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async def call(
        self, method: str, path: str, *, token: bool = True, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        h = {"X-Zmesh-Token": self.token} if token else {}
        return await asyncio.to_thread(self._do, method, path, {**h, **(headers or {})})

    async def json(self, path: str) -> Any:
        status, body = await self.call("GET", path)
        assert status == 200, body
        return json.loads(body)


def sse_events(body: bytes) -> list[tuple[str, str, Any]]:
    """(id, event, data) of every event in an SSE body."""
    out = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            out.append((fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])))
    return out


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[tuple[Agent, Http]]:
    async with mesh(tmp_path, 1) as agents:
        server = UiServer(Client(f"unix:{agents[0].home.socket}"))
        task = asyncio.create_task(server.serve())
        try:
            yield agents[0], Http(server)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_token_pages_and_members(ui: tuple[Agent, Http]) -> None:
    _, http = ui
    assert (await http.call("GET", "/api/members", token=False))[0] == 403
    assert (await http.call("GET", "/", token=False))[0] == 403
    status, page = await http.call("GET", f"/?token={http.token}", token=False)
    assert status == 200 and b"/static/app.js" in page
    req = urllib.request.Request(f"{http.base}/", headers={"X-Zmesh-Token": http.token})
    with await asyncio.to_thread(urllib.request.urlopen, req, timeout=20) as resp:
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert (await http.call("GET", "/static/app.js"))[0] == 200
    members = await http.json("/api/members")
    assert members["self"] == "agent-0"
    assert [(m["name"], m["status"]) for m in members["members"]] == [("agent-0", "alive")]


async def test_campaign_edges_events_resume_and_cancel(ui: tuple[Agent, Http]) -> None:
    agent, http = ui
    client = Client(f"unix:{agent.home.socket}")
    make = ShellActivity("make", cmd="echo 1 > $ZMESH_OUTPUT_DIR/x")
    use = ShellActivity("use", cmd="sleep 60", data_uris=[make.output_dir])
    after = ShellActivity("after", cmd="true", depends_on=[make])
    sub = await client.submit("ui test", [make, use, after])
    cid = sub.campaign_id

    async def state_of(name: str) -> str:
        doc = await http.json(f"/api/campaigns/{cid}")
        return {a["name"]: a["state"] for a in doc["activities"]}[name]

    for _ in range(200):
        if await state_of("use") == "RUNNING":
            break
        await asyncio.sleep(0.1)
    doc = await http.json(f"/api/campaigns/{cid}")
    deps = {a["name"]: a["depends_on"] for a in doc["activities"]}
    assert deps == {"make": [], "use": ["make"], "after": ["make"]}  # output ref is an edge
    assert sorted(doc["layout"]["pages"][0]["edges"]) == [["make", "after"], ["make", "use"]]
    listed = await http.json("/api/campaigns")
    assert [c["id"] for c in listed["campaigns"]] == [cid]

    # A POST without the header (what a cross-origin form can send) changes nothing.
    assert (await http.call("POST", f"/api/campaigns/{cid}/cancel", token=False))[0] == 403
    assert (
        await http.call(
            "POST", f"/api/campaigns/{cid}/cancel", headers={"Origin": "http://127.0.0.1:1"}
        )
    )[0] == 403
    assert await state_of("use") == "RUNNING"
    status, body = await http.call("POST", f"/api/campaigns/{cid}/cancel")
    assert status == 200 and json.loads(body)["state"] == "CANCELLED"

    # The event stream ends after the final event; Last-Event-ID resumes after it.
    status, body = await http.call("GET", f"/api/stream/campaigns/{cid}")
    events = sse_events(body)
    seqs = [e["seq"] for _, kind, batch in events if kind == "events" for e in batch]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events[-1][1] == "end"
    resumed = sse_events(
        (await http.call("GET", f"/api/stream/campaigns/{cid}", headers={"Last-Event-ID": "3"}))[1]
    )
    assert [e["seq"] for _, k, b in resumed if k == "events" for e in b] == seqs[3:]
    assert (await http.call("GET", "/api/campaigns/nope"))[0] == 404
    # A finished campaign's edges come from its stored request.
    assert agent.monitor is not None and cid not in agent.monitor.live
    done = await http.json(f"/api/campaigns/{cid}")
    assert {a["name"]: a["depends_on"] for a in done["activities"]} == deps


def test_zmesh_ui_without_a_running_agent_says_so(tmp_path: Path) -> None:
    proc = zmesh("ui", home=tmp_path / "nowhere", check=False, timeout=30)
    assert proc.returncode != 0
    assert "start the agent first" in proc.stderr
    bad = zmesh("ui", "--host", "not-an-ip", home=tmp_path, check=False, timeout=30)
    assert bad.returncode != 0 and "must be an IP address" in bad.stderr


async def test_the_agent_serves_the_web_view_with_ui_listen(tmp_path: Path) -> None:
    async with mesh(tmp_path, 1, configure=lambda i: {"ui_listen": "127.0.0.1:0"}) as agents:
        url_file = agents[0].home.root / "ui.url"
        assert url_file.stat().st_mode & 0o077 == 0
        url = url_file.read_text().strip()
        base, token = url.split("/?token=")

        def get(path: str, headers: dict[str, str]) -> int:
            req = urllib.request.Request(base + path, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=20) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await asyncio.to_thread(get, "/api/members", {}) == 403
        assert await asyncio.to_thread(get, "/api/members", {"X-Zmesh-Token": token}) == 200
        # The agent's own server browses its data (it is a client of the Unix socket).
        (agents[0].data_dir / "x.txt").write_text("x")
        listing = "/api/data/list?uri=" + quote("agent-0://.")
        assert await asyncio.to_thread(get, listing, {"X-Zmesh-Token": token}) == 200
    with pytest.raises(OSError):  # stopped with the agent
        await asyncio.to_thread(urllib.request.urlopen, base + "/", timeout=5)


async def test_data_page_lists_and_downloads_through_the_agent(ui: tuple[Agent, Http]) -> None:
    agent, http = ui
    blob = os.urandom(2_500_000)
    (agent.data_dir / "runs").mkdir()
    (agent.data_dir / "runs" / "résumé data.bin").write_bytes(blob)
    (agent.data_dir / "runs" / "sub").mkdir()
    members = await http.json("/api/members")
    assert members["members"][0]["roots"] == []  # no exported roots: @agentdir only
    listing = await http.json("/api/data/list?uri=" + quote("agent-0://runs"))
    assert listing["agent"] == "agent-0" and not listing["truncated"]
    rows = [(e["name"], e["uri"], e["is_dir"], e["size"]) for e in listing["entries"]]
    assert rows == [
        ("résumé data.bin", "agent-0://runs/résumé data.bin", False, len(blob)),
        ("sub", "agent-0://runs/sub", True, 0),
    ]
    assert listing["entries"][0]["mtime_ms"] > 1_600_000_000_000
    path = "/api/data/download?uri=" + quote(listing["entries"][0]["uri"])
    assert (await http.call("GET", path, token=False))[0] == 403
    req = urllib.request.Request(http.base + path, headers={"X-Zmesh-Token": http.token})
    with await asyncio.to_thread(urllib.request.urlopen, req, timeout=20) as resp:
        assert resp.headers["Content-Length"] == str(len(blob))
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert "r%C3%A9sum%C3%A9%20data.bin" in resp.headers["Content-Disposition"]
        assert await asyncio.to_thread(resp.read) == blob
    for uri, code in [
        ("agent-0:///etc/passwd", 403),
        ("agent-0://runs/../../x", 400),
        ("agent-0://runs", 400),  # a directory is listed, not downloaded
        ("agent-0://nothing-here", 404),
        ("nobody://x", 404),
        ("", 400),
    ]:
        status, body = await http.call("GET", "/api/data/download?uri=" + quote(uri))
        assert status == code, (uri, body)
        assert json.loads(body)["error"]
    status, _ = await http.call("GET", "/api/data/list?uri=" + quote("agent-0:///etc"))
    assert status == 403
