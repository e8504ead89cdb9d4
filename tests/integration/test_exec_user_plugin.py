"""A third-party plugin package (scripts/examples/zmesh-hello-plugin) on a real mesh."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import site
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.helpers.inproc import mesh, wait_until
from tests.integration.test_campaigns_e2e import by_name, submit_and_watch
from zambeze_mesh.cli.main import main as zmesh
from zambeze_mesh.v1 import campaigns_pb2_grpc, common_pb2

S = common_pb2
ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "scripts" / "examples" / "zmesh-hello-plugin"


def _installed() -> bool:
    try:
        importlib.metadata.distribution("zmesh-hello-plugin")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def hello_installed() -> None:
    """pip install -e the example package (once; later runs find it installed)."""
    if not _installed():
        res = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "-e", str(PKG)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if res.returncode != 0:
            pytest.skip(f"cannot pip install the example plugin: {res.stderr[-500:]}")
        # This process started before the install: process the new .pth files.
        for sp in site.getsitepackages():
            site.addsitedir(sp)
        importlib.invalidate_caches()
    assert _installed()
    importlib.import_module("zmesh_hello")


def hello(name: str, who: str, **kw: object) -> S.ActivitySpec:
    return S.ActivitySpec(
        name=name,
        workflow=S.WorkflowSpec(wf_manager="hello", wf_config_json=json.dumps({"who": who})),
        **kw,
    )


async def test_user_plugin_is_advertised_and_wins_the_bid(
    tmp_path: Path, hello_installed: None
) -> None:
    # Both agents run in this process (and so see the entry point): agent-0 disables it.
    def configure(i: int) -> dict[str, object]:
        return {"disabled_plugins": ["hello"]} if i == 0 else {}

    async with mesh(tmp_path, 2, configure=configure) as agents:
        a0, a1 = agents
        assert a0.registry is not None and a1.registry is not None
        assert "hello" not in a0.registry.loaded and "hello" in a1.registry.loaded
        assert a0.gossip is not None

        def advertised() -> bool:
            assert a0.gossip is not None
            rec = a0.gossip._records.get("agent-1")
            return rec is not None and "hello" in rec.capabilities.plugins

        await wait_until(advertised, 10, "agent-1's hello plugin to reach agent-0 by gossip")
        own = a0.gossip._records["agent-0"]
        assert "hello" not in own.capabilities.plugins
        async with grpc.aio.insecure_channel(f"unix:{a0.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            status, _ = await submit_and_watch(stub, [hello("greet", "Ada")])
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
    greet = by_name(status)["greet"]
    assert greet.agent == "agent-1"
    out = Path(greet.detail["output_dir"]) / "hello.txt"
    assert out.read_text() == f"hello, Ada from {a1.data_dir.name}\n"
    assert out.is_relative_to(a1.data_dir)


async def test_broken_plugin_in_config_is_reported(
    tmp_path: Path, hello_installed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    async with mesh(tmp_path, 1, configure=lambda i: {"plugins": ["nonexistent.module:Nope"]}) as (
        agents
    ):
        agent = agents[0]
        assert agent.registry is not None
        assert "nonexistent.module:Nope" in agent.registry.failed
        assert "shell" in agent.registry.loaded  # the agent started and serves
        home = agent.home.root
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            shell = S.ActivitySpec(name="ok", shell=S.ShellSpec(cmd="true"))
            ok, _ = await submit_and_watch(stub, [shell])
            assert ok.state == S.CAMPAIGN_STATE_SUCCEEDED
    capsys.readouterr()
    code = await asyncio.to_thread(zmesh, ["plugins", "--json", "--home", str(home)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1  # some plugin failed
    names = {p["name"] for p in doc["loaded"]}
    assert {"shell", "python", "hello", "dask", "parsl"} <= names
    reason = doc["failed"]["nonexistent.module:Nope"]
    assert "cannot import nonexistent.module:Nope" in reason and "ModuleNotFoundError" in reason
    assert "no scheduler configured" in doc["disabled"]["batch"]
    code = await asyncio.to_thread(zmesh, ["plugins", "--home", str(home)])
    text = capsys.readouterr().out
    assert "nonexistent.module:Nope" in text and "failed" in text and "hello" in text
