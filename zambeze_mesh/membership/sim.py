"""Discrete-event simulator: many :class:`Swim` machines over a lossy virtual network.

Same network semantics as :class:`zambeze_mesh.transport.memory.MemoryNetwork`
(independent loss per message, uniform delay, symmetric partitions) but on a
virtual clock without asyncio, so 1,000 agents run in seconds. Message sizes
are estimated with a simple model (see :func:`estimate_size`).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.events import MemberEvent
from zambeze_mesh.membership.messages import (
    ALIVE,
    LEFT,
    Ack,
    Gossip,
    Leave,
    Message,
    Nack,
    Ping,
    PingReq,
    SyncRequest,
    SyncResponse,
    Update,
)
from zambeze_mesh.membership.steps import (
    Effects,
    Input,
    LeaveRequest,
    Received,
    SendFailed,
    Start,
    TimerFired,
    UpdateLocal,
)
from zambeze_mesh.membership.swim import Swim

HEADER_BYTES = 48
"""Model: framing + sender name + seq of one message (gRPC/HTTP2 overhead not included)."""
UPDATE_BYTES = 40
"""Model: kind, name, incarnation, source of one update."""


def estimate_size(msg: Message, record_bytes: int) -> int:
    """Rough encoded size of ``msg`` when each alive/left record is ``record_bytes`` long."""
    if isinstance(msg, Ping | Ack | PingReq):
        updates: tuple[Update, ...] = msg.piggyback
    elif isinstance(msg, Gossip):
        updates = msg.updates
    elif isinstance(msg, SyncRequest | SyncResponse):  # every entry carries its record
        return HEADER_BYTES + len(msg.state) * (UPDATE_BYTES + record_bytes)
    elif isinstance(msg, Leave):
        updates = (msg.update,)
    else:
        updates = ()
    size = HEADER_BYTES
    for u in updates:
        size += UPDATE_BYTES + (record_bytes if u.kind in (ALIVE, LEFT) else 0)
    return size


@dataclass
class SimNode:
    """One simulated agent."""

    name: str
    address: str
    swim: Swim
    up: bool = True
    generation: int = 0
    stalled_until: float = 0.0  # see Simulation.stall


@dataclass
class Stats:
    """Counters over a run (reset with :meth:`Simulation.reset_stats`)."""

    messages: int = 0
    bytes: int = 0
    dropped: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    false_dead: int = 0
    suspected: set[tuple[str, int]] = field(default_factory=set)
    """Distinct (member, incarnation) suspicions seen anywhere."""


class Simulation:
    """N agents named ``n0..n{N-1}``; the first ``seeds`` are everyone's join seeds."""

    def __init__(
        self,
        n: int,
        config: Config,
        *,
        seed: int = 0,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.001, 0.005),
        seeds: int = 3,
        record_bytes: int = 700,
        accept: Callable[[Update], bool] | None = None,
        refuse_down: bool = False,
    ) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.loss = loss
        self.delay = delay
        self.record_bytes = record_bytes
        self.accept = accept
        self.refuse_down = refuse_down
        self.now = 0.0
        self.stats = Stats()
        self.on_event: Callable[[str, MemberEvent], None] | None = None
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = 0
        self._cut: set[frozenset[str]] | None = None
        self._side: dict[str, int] = {}
        self.nodes = [self._make(f"n{i}", f"sim://n{i}", 0) for i in range(n)]
        self._by_addr = {node.address: i for i, node in enumerate(self.nodes)}
        self.seed_addresses = [node.address for node in self.nodes[:seeds]]

    def _make(self, name: str, address: str, incarnation: int) -> SimNode:
        def make_record(inc: int) -> tuple[str, int]:
            return (name, inc)

        swim = Swim(
            name,
            address,
            self.config,
            random.Random(self.rng.random()),
            make_record,
            accept=self.accept,
            incarnation=incarnation,
        )
        return SimNode(name, address, swim)

    # ------------------------------------------------------------ control
    def index(self, name: str) -> int:
        """Index of the node called ``name``."""
        return int(name[1:])

    def start(self, spread: float = 0.0, indices: list[int] | None = None) -> None:
        """Start nodes (all by default) at random times within ``spread`` seconds from now."""
        seeds = [(None, a) for a in self.seed_addresses]
        for i in indices if indices is not None else range(len(self.nodes)):
            at = self.now + (self.rng.uniform(0.0, spread) if spread else 0.0)
            self._push(at, i, Start(seeds))

    def kill(self, i: int) -> None:
        """Stop node ``i`` abruptly: it answers nothing from now on."""
        self.nodes[i].up = False

    def restart(self, i: int, incarnation: int = 0) -> None:
        """Start a fresh process for node ``i`` (same name and address) and rejoin."""
        old = self.nodes[i]
        node = self._make(old.name, old.address, incarnation)
        node.generation = old.generation + 1
        self.nodes[i] = node
        self._push(
            self.now, i, Start([(None, a) for a in self.seed_addresses if a != node.address])
        )

    def stall(self, i: int, seconds: float) -> None:
        """Freeze node ``i`` for ``seconds`` from now, as a process starved of CPU or an
        event loop blocked by a long call: nothing it should handle meanwhile is handled
        until the stall ends; then its due timers fire first and the messages that
        arrived meanwhile are processed just after (they need another loop pass)."""
        node = self.nodes[i]
        node.stalled_until = max(node.stalled_until, self.now + seconds)

    def leave(self, i: int) -> None:
        """Ask node ``i`` to leave gracefully (it keeps running to spread the news)."""
        self._push(self.now, i, LeaveRequest())

    def update_local(self, i: int) -> None:
        """Node ``i``'s record changed."""
        self._push(self.now, i, UpdateLocal())

    def partition(self, groups: list[list[int]]) -> None:
        """Cut every link between different groups (nodes in no group stay connected to all)."""
        self._side = {self.nodes[i].address: g for g, grp in enumerate(groups) for i in grp}

    def heal(self) -> None:
        """Remove the partition."""
        self._side = {}

    def reset_stats(self) -> None:
        """Start counting afresh."""
        self.stats = Stats()

    # ------------------------------------------------------------ queries
    def live(self) -> list[int]:
        """Indices of nodes that are up and have not left."""
        return [i for i, n in enumerate(self.nodes) if n.up and not n.swim.leaving]

    def converged(self) -> bool:
        """Every live node sees exactly the live nodes alive (O(N) via counters)."""
        live = self.live()
        want = len(live)
        return all(self.nodes[i].swim.count(ALIVE) == want for i in live)

    def everyone_sees(self, name: str, status: str) -> bool:
        """Every live node other than ``name`` has ``name`` with ``status``."""
        for i in self.live():
            node = self.nodes[i]
            if node.name == name:
                continue
            m = node.swim.member(name)
            if m is None or m.status != status:
                return False
        return True

    # ------------------------------------------------------------ running
    def _push(self, at: float, i: int, inp: Input) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, i, self.nodes[i].generation, inp))

    def run_until(
        self, until: float, stop: Callable[[], bool] | None = None, check_every: float = 0.05
    ) -> bool:
        """Run to virtual time ``until``; with ``stop``, return True as soon as it holds."""
        heap = self._heap
        nodes = self.nodes
        next_check = self.now
        while heap and heap[0][0] <= until:
            at, _, i, gen, inp = heapq.heappop(heap)
            if stop is not None and at >= next_check:
                self.now = next_check
                if stop():
                    return True
                next_check += check_every
            self.now = at
            node = nodes[i]
            if not node.up or node.generation != gen:
                continue
            if at < node.stalled_until:
                resume = node.stalled_until + (0.0 if isinstance(inp, TimerFired) else 1e-3)
                self._push(resume, i, inp)
                continue
            self._handle(i, node, node.swim.step(at, inp))
        self.now = until
        return stop() if stop is not None else False

    def _handle(self, i: int, node: SimNode, fx: Effects) -> None:
        for t in fx.timers:
            self._push(t.at, i, TimerFired(t.key))
        if fx.events:
            self._count_events(node, fx)
        stats = self.stats
        lo, hi = self.delay
        rnd = self.rng.random
        for s in fx.sends:
            stats.messages += 1
            stats.bytes += estimate_size(s.msg, self.record_bytes)
            stats.by_type[type(s.msg).__name__] += 1
            j = self._by_addr.get(s.dst_address)
            if j is None or self._blocked(node.address, s.dst_address) or rnd() < self.loss:
                stats.dropped += 1
                continue
            if self.refuse_down and not self.nodes[j].up:
                self._push(self.now + lo, i, SendFailed(s.dst_address, s.msg))
                continue
            self._push(self.now + lo + (hi - lo) * rnd(), j, Received(node.address, s.msg))

    def _blocked(self, a: str, b: str) -> bool:
        side = self._side
        if not side:
            return False
        sa, sb = side.get(a), side.get(b)
        return sa is not None and sb is not None and sa != sb

    def _count_events(self, node: SimNode, fx: Effects) -> None:
        stats = self.stats
        for ev in fx.events:
            stats.events[ev.kind] += 1
            if ev.kind == "suspect":
                stats.suspected.add((ev.member.name, ev.member.incarnation))
            elif ev.kind == "dead":
                j = self.index(ev.member.name)
                other = self.nodes[j]
                if (
                    other.up
                    and not other.swim.leaving
                    and not self._blocked(node.address, other.address)
                ):
                    stats.false_dead += 1
            if self.on_event is not None:
                self.on_event(node.name, ev)


__all__ = ["Nack", "SimNode", "Simulation", "Stats", "estimate_size"]
