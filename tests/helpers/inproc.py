"""In-process meshes: real Agents (real gRPC, real mTLS) in one event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.helpers.ports import free_port_pair
from zambeze_mesh.agent.agent import Agent
from zambeze_mesh.agent.bootstrap import init_mesh, open_store
from zambeze_mesh.agent.join import join_mesh
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store.tokens import create_token


def _token(home: Home) -> str:
    store = open_store(home)
    try:
        return create_token(store, 3600)
    finally:
        store.close()


async def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``cond`` every 50 ms until true, or fail with ``what``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.05)


def converged(agents: list[Agent]) -> bool:
    """Every agent sees every other agent alive."""
    names = {a.name for a in agents}
    for a in agents:
        assert a.gossip is not None
        alive = {m.name for m in a.gossip.members() if m.status == "alive"}
        if not names <= alive:
            return False
    return True


@asynccontextmanager
async def mesh(
    root: Path,
    n: int,
    *,
    labels: list[dict[str, str]] | None = None,
    configure: Callable[[int], dict[str, Any]] | None = None,
) -> AsyncIterator[list[Agent]]:
    """Start ``n`` agents (agent-0 creates the mesh, the others join through it).

    Activities run unconfined (``sandbox = "none"``) unless ``configure`` says
    otherwise: many tests let activities write marker files anywhere under their
    tmp_path, which the default sandbox hides.
    """
    agents: list[Agent] = []
    try:
        for i in range(n):
            home = Home(root / f"agent-{i}")
            port = free_port_pair()
            extra = {"sandbox": "none", **(configure(i) if configure else {})}
            lab = labels[i] if labels else {}
            if i == 0:
                init_mesh(
                    home,
                    name=f"agent-{i}",
                    listen=f"127.0.0.1:{port}",
                    mesh="test",
                    labels=lab,
                    **extra,
                )
            else:
                seed = agents[0]
                await join_mesh(
                    home,
                    seed.address,
                    _token(seed.home),
                    name=f"agent-{i}",
                    listen=f"127.0.0.1:{port}",
                    labels=lab,
                    **extra,
                )
            agent = Agent(home)
            await agent.start()
            agents.append(agent)
        await wait_until(lambda: converged(agents), 30, "mesh convergence")
        yield agents
    finally:
        for a in reversed(agents):
            await a.shutdown(grace=1.0)
