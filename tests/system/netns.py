"""A tiny lab of Linux network namespaces for failure tests: hosts on one bridge.

``Lab(prefix, n)`` creates a "switch" namespace holding a bridge, and ``n`` host
namespaces each wired to it by a veth pair, with addresses in a private /24 that exists
only inside these namespaces (nothing is added to the caller's namespace, so no packet
can leave the machine). ``block(i)`` drops all of host ``i``'s traffic except loopback
with nftables inside its namespace; ``unblock(i)`` deletes that table again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

NFT_TABLE = "zmtest"
_BLOCK_RULES = f"""
table inet {NFT_TABLE} {{
  chain input {{ type filter hook input priority 0; policy drop; iif "lo" accept; }}
  chain output {{ type filter hook output priority 0; policy drop; oif "lo" accept; }}
}}
"""


def _run(
    argv: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 nftables)"
    probe = f"zmprobe{os.getpid()}"
    made = _run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    try:
        nft = _run(["ip", "netns", "exec", probe, "nft", "list", "ruleset"], check=False)
        if nft.returncode != 0:
            return f"nftables does not work in a namespace here: {nft.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


@dataclass
class Netns:
    """One named network namespace."""

    name: str

    def argv(self, *cmd: str) -> list[str]:
        """``cmd`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self, *cmd: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside this namespace and capture its output."""
        return _run(self.argv(*cmd), check=check, input=input, timeout=timeout)

    def ip(self, *args: str) -> None:
        """``ip -n <ns> args``."""
        _run(["ip", "-n", self.name, *args])


@dataclass
class Lab:
    """A bridge in a switch namespace and ``n`` hosts at ``<subnet>.1`` … ``<subnet>.n``."""

    prefix: str
    n: int
    subnet: str = "10.213.0"
    switch: Netns = field(init=False)
    hosts: list[Netns] = field(init=False)

    def __post_init__(self) -> None:
        self.switch = Netns(f"{self.prefix}sw")
        self.hosts = [Netns(f"{self.prefix}h{i}") for i in range(self.n)]

    def address(self, i: int) -> str:
        """Host ``i``'s address (no prefix length)."""
        return f"{self.subnet}.{i + 1}"

    def create(self) -> None:
        """Create the namespaces, the bridge and the links; bring everything up."""
        for ns in (self.switch, *self.hosts):
            _run(["ip", "netns", "add", ns.name])
            ns.ip("link", "set", "lo", "up")
        sw = self.switch
        sw.ip("link", "add", "br0", "type", "bridge")
        sw.ip("link", "set", "br0", "up")
        for i, host in enumerate(self.hosts):
            port = f"p{i}"
            sw.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.name)
            sw.ip("link", "set", port, "master", "br0")
            sw.ip("link", "set", port, "up")
            host.ip("addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            host.ip("link", "set", "eth0", "up")
            # Multicast (zeroconf) stays on this link: no default route, only the /24.
            host.ip("route", "add", "224.0.0.0/4", "dev", "eth0")

    def destroy(self) -> None:
        """Delete every namespace of the lab (idempotent; veths go with them)."""
        for ns in (*self.hosts, self.switch):
            _run(["ip", "netns", "del", ns.name], check=False)

    def block(self, i: int) -> None:
        """Drop every packet in and out of host ``i`` except on its loopback."""
        self.hosts[i].run("nft", "-f", "-", input=_BLOCK_RULES)

    def unblock(self, i: int) -> None:
        """Remove the drop table of host ``i``."""
        self.hosts[i].run("nft", "delete", "table", "inet", NFT_TABLE)
