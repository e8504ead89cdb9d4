"""A tiny lab of Linux network namespaces for failure tests: hosts on one bridge.

``Lab(prefix, n)`` creates a "switch" namespace holding a bridge, and ``n`` host
namespaces each wired to it by a veth pair, with addresses in a private /24 that exists
only inside these namespaces (nothing is added to the caller's namespace, so no packet
can leave the machine). ``block(i)`` drops all of host ``i``'s traffic except loopback
with nftables inside its namespace; ``unblock(i)`` deletes that table again.
``shape(i, rate)`` caps host ``i``'s outgoing bandwidth with a tc token bucket.

:class:`NsAgent` is one real ``zmesh`` agent process inside a host namespace, started
optionally under a wrapper (a read-only bind mount of its data dir in a private mount
namespace, or libfaketime for a skewed wall clock) and killable with SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    for tool in ("ip", "nft", "tc"):
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

    def shape(self, i: int, rate: str) -> None:
        """Cap what host ``i`` sends to ``rate`` (tc syntax, e.g. ``"200mbit"``)."""
        self.hosts[i].run(
            "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
            "rate", rate, "burst", "256kb", "latency", "400ms",
        )  # fmt: skip

    def unshape(self, i: int) -> None:
        """Remove host ``i``'s bandwidth cap."""
        self.hosts[i].run("tc", "qdisc", "del", "dev", "eth0", "root", check=False)


FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def faketime_lib() -> str | None:
    """The libfaketime preload library (Debian package ``faketime``), or None."""
    for cand in (FAKETIME_LIB, "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"):
        if os.path.exists(cand):
            return cand
    return None


def skew_env(offset: str) -> dict[str, str]:
    """Environment that shifts a process's wall clock by ``offset`` (e.g. ``"+5s"``).

    Only CLOCK_REALTIME moves (``FAKETIME_DONT_FAKE_MONOTONIC``), as with a host whose
    NTP is off: monotonic timers keep running at the real rate.
    """
    lib = faketime_lib()
    if lib is None:
        raise RuntimeError("libfaketime is not installed (apt-get install faketime)")
    return {"LD_PRELOAD": lib, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


# Runs "$@" in a private mount namespace where $ZM_RO is a read-only bind mount.
_RO_WRAPPER = (
    'mkdir -p "$ZM_RO" && mount --bind "$ZM_RO" "$ZM_RO"'
    ' && mount -o remount,bind,ro "$ZM_RO" && exec "$@"'
)


@dataclass
class NsAgent:
    """A real ``zmesh`` agent whose process runs inside namespace ``ns``.

    ``readonly`` names a directory made read-only for this agent only (a bind mount in
    its own mount namespace: root ignores file modes, not read-only mounts); ``env``
    adds environment variables (e.g. :func:`skew_env`) to every command it runs.
    """

    ns: Netns
    name: str
    home: Path
    address: str
    readonly: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, *args: str) -> list[str]:
        """``zmesh --home <home> args`` inside the namespace (and wrappers)."""
        cmd = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(self.home), *args]
        if self.readonly is not None:
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", _RO_WRAPPER, "sh", *cmd]
        return self.ns.argv(*cmd)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start ``zmesh args`` without waiting (see :func:`finish`)."""
        env = {**os.environ, **self.env}
        if self.readonly is not None:
            env["ZM_RO"] = str(self.readonly)
        return subprocess.Popen(
            self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    def zmesh(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run ``zmesh args`` to completion; its stdout."""
        return finish(self.popen(*args), f"zmesh {' '.join(args)} on {self.name}", check, timeout)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket(self) -> Path:
        return self.home / "agent.sock"

    @property
    def pid(self) -> int | None:
        """Pid of the running agent process (from its pid file), if any."""
        try:
            pid = int((self.home / "agent.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def start(self) -> None:
        """``zmesh agent start`` (returns once it serves).

        Under libfaketime the agent runs in the foreground of a process started here:
        libfaketime 0.9.10 makes ``time.sleep`` fail with EINVAL when only the wall
        clock is faked, and the ``agent start`` launcher polls with ``time.sleep``.
        """
        if "LD_PRELOAD" not in self.env:
            self.zmesh("agent", "start")
            return
        for stale in ("agent.ports", "agent.sock"):
            (self.home / stale).unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        with open(self.home / "agent.out", "ab") as out:
            proc = subprocess.Popen(
                self.argv("agent", "start", "--foreground"),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not ((self.home / "agent.ports").exists() and self.socket.exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start: see {self.home / 'agent.out'}")
            time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL the agent process and wait until it is gone."""
        pid = self.pid
        assert pid is not None, f"{self.name} is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.name} (pid {pid}) survived SIGKILL")

    def stop(self) -> None:
        """Stop the agent if it runs (SIGTERM via ``zmesh agent stop``)."""
        if self.pid is not None:
            self.zmesh("agent", "stop", check=False)


def finish(proc: subprocess.Popen[str], what: str, check: bool = True, timeout: float = 60) -> str:
    """Wait for a :meth:`NsAgent.popen` process; its stdout (raise on failure if ``check``)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{what} timed out after {timeout}s: {err}") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"{what} exited {proc.returncode}: {err.strip()}")
    return out
