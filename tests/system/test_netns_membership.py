"""Membership across real links: three agents in three network namespaces on a bridge.

Cutting one namespace off with nftables makes the others mark it dead; deleting the
table heals the link and the mesh converges to all-alive again by itself. The third
agent joins through zeroconf discovery on the bridge (multicast never leaves the lab).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.faults import lab_up, token, wait_views
from tests.system.netns import Lab, Netns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PORT = 7400
N = 3


class NsAgent:
    """An agent whose process runs inside one namespace; driven through the CLI."""

    def __init__(self, ns: Netns, name: str, home: Path, address: str) -> None:
        self.ns, self.name, self.home, self.address = ns, name, home, f"{address}:{PORT}"

    def zmesh(self, *args: str, check: bool = True) -> str:
        argv = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(self.home), *args]
        proc = self.ns.run(*argv, check=False, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"zmesh {' '.join(args)} in {self.ns.name}: {proc.stderr}")
        return proc.stdout

    def stop(self) -> None:
        if (self.home / "agent.pid").exists():
            self.zmesh("agent", "stop", check=False)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Lab, list[NsAgent]]]:
    lab = Lab(f"zm{os.getpid() % 100000}", N)
    agents = [NsAgent(lab.hosts[i], f"n{i}", tmp_path / f"n{i}", lab.address(i)) for i in range(N)]
    with lab_up(lab, agents):
        yield lab, agents


def test_partitioned_namespace_is_dead_then_heals(lab: tuple[Lab, list[NsAgent]]) -> None:
    net, agents = lab
    n0, n1, n2 = agents
    n0.zmesh("init", "--name", "n0", "--listen", n0.address, "--mesh", "netns")
    n0.zmesh("agent", "start")
    n1.zmesh("join", n0.address, "--token", token(n0), "--name", "n1", "--listen", n1.address)
    out = n2.zmesh(
        "join", "--discover", "--interface", net.address(2), "--discover-timeout", "10",
        "--token", token(n0), "--name", "n2", "--listen", n2.address,
    )  # fmt: skip
    assert "discovered seed 10.213.0." in out, out
    n1.zmesh("agent", "start")
    n2.zmesh("agent", "start")
    everyone = {a.name: "alive" for a in agents}
    took = wait_views(agents, everyone, 30, "three namespaces alive everywhere")
    print(f"\nconverged {took:.2f}s after the last start")

    t_cut = time.monotonic()
    net.block(2)
    took = wait_views([n0, n1], {"n2": "dead"}, 30, "n2 dead at n0 and n1")
    print(f"cut link detected as dead everywhere after {time.monotonic() - t_cut:.2f}s")
    assert took < 20

    net.unblock(2)
    took = wait_views(agents, everyone, 60, "all alive again after healing")
    print(f"healed: all alive everywhere {took:.2f}s after the nft table was deleted")
