"""Fixtures for the campaign (client API) tests: a fake Campaigns server on a Unix socket."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.campaign.fake_campaigns import FakeCampaigns, ServerThread
from zambeze_mesh.campaign.client import Client, set_default_client


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose socket paths fit the ~100-byte Unix socket limit."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="zmc-"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def fake() -> FakeCampaigns:
    """The scripted test double of the Campaigns service."""
    return FakeCampaigns()


@pytest.fixture
def server(fake: FakeCampaigns, sock_dir: Path) -> Iterator[ServerThread]:
    """The fake service served by a real grpc.aio server on a Unix socket."""
    srv = ServerThread(fake, sock_dir / "agent.sock")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    """A client of the fake server with quick watch retries."""
    c = Client(server.target, retry_backoff=0.01)
    try:
        yield c
    finally:
        c.close_sync()
        set_default_client(None)
