"""SWIM + Lifeguard membership as a pure state machine (modelled on HashiCorp memberlist).

:class:`Swim` never touches a clock, a socket or a global random generator:
:meth:`Swim.step` takes the current time and one input and returns the
messages to send, the timers to set and the events to publish. Every
operation on a message costs O(updates carried), not O(members), so one
process can simulate thousands of agents.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Any

from zambeze_mesh.membership.broadcasts import BroadcastQueue
from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.events import MemberEvent, MemberState
from zambeze_mesh.membership.messages import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
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
from zambeze_mesh.membership.rules import UpdateRules
from zambeze_mesh.membership.status import GONE, MemberStatus
from zambeze_mesh.membership.steps import (
    Effects,
    Input,
    Join,
    LeaveRequest,
    Received,
    Retire,
    Send,
    SendFailed,
    SetTimer,
    Start,
    TimerFired,
    UpdateLocal,
)
from zambeze_mesh.membership.suspicion import Awareness, Suspicion
from zambeze_mesh.membership.table import Member, MemberTable


class _Probe:
    __slots__ = (
        "acked",
        "address",
        "expected_nacks",
        "incarnation",
        "indirect",
        "nacks",
        "seq",
        "stalled",
        "target",
    )

    def __init__(self, seq: int, target: str, address: str, incarnation: int) -> None:
        self.seq = seq
        self.target = target
        self.address = address
        self.incarnation = incarnation
        self.acked = False
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0
        self.stalled = False  # its round was already extended once for a local stall


class Swim(UpdateRules):
    """One agent's membership protocol state.

    ``make_record(incarnation)`` returns the agent's opaque self-record (a signed
    protobuf in the real agent); ``make_left_record`` (default: ``make_record``)
    the one announcing departure. ``accept(update)``, when given, is called on
    incoming ``alive``/``left`` updates about others before they are applied
    (only when they would change the view) and drops them if it returns False.
    ``incarnation`` lets a restarted agent resume above its last incarnation.
    """

    def __init__(
        self,
        name: str,
        address: str,
        config: Config,
        rng: random.Random,
        make_record: Callable[[int], Any],
        accept: Callable[[Update], bool] | None = None,
        incarnation: int = 0,
        make_left_record: Callable[[int], Any] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.config = config
        self._rng = rng
        self._make_record = make_record
        self._make_left_record = make_left_record or make_record
        self._accept = accept
        self._inc = incarnation
        self._now = 0.0
        self._record = make_record(incarnation)
        me = Member(name, address, incarnation, ALIVE, self._record, 0.0)
        self._table = MemberTable(me, rng)
        self._members = self._table.members
        self._counts = self._table.counts
        self._probe: _Probe | None = None
        self._relays: dict[int, tuple[str, str, int]] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._queue = BroadcastQueue()
        self.awareness = Awareness(config.awareness_max_multiplier)
        self._probe_due = 0.0  # when the current probe round is meant to close
        self._seq = 0
        self._seeds: list[str] = []
        self._started = False
        self._leaving = False
        self._push_pull_rounds = 0
        self._fast_syncs = 0
        self._fx = Effects()
        self._dispatch: dict[type, Callable[[str, Any], None]] = {
            Ping: self._on_ping,
            PingReq: self._on_ping_req,
            Ack: self._on_ack,
            Nack: self._on_nack,
            Gossip: self._on_gossip,
            SyncRequest: self._on_sync_request,
            SyncResponse: self._on_sync_response,
            Leave: self._on_leave,
        }

    # ----------------------------------------------------------------- view
    @property
    def incarnation(self) -> int:
        """Our own current incarnation."""
        return self._inc

    @property
    def leaving(self) -> bool:
        """True once :class:`LeaveRequest` was processed."""
        return self._leaving

    def members(self) -> list[MemberState]:
        """Snapshot of every known member, ourselves included."""
        return [m.snapshot() for m in self._members.values()]

    def member(self, name: str) -> MemberState | None:
        """Snapshot of one member, if known."""
        m = self._members.get(name)
        return None if m is None else m.snapshot()

    def count(self, status: MemberStatus | str) -> int:
        """How many known members (ourselves included) have ``status``; O(1)."""
        return self._counts[MemberStatus(status)]

    def suspicion_deadline(self, name: str) -> float | None:
        """When a pending suspicion of ``name`` turns into death, if there is one."""
        s = self._suspicions.get(name)
        return None if s is None else s.deadline

    def pending_broadcasts(self) -> int:
        """Updates still waiting to be (re)transmitted."""
        return len(self._queue)

    # ----------------------------------------------------------------- step
    def step(self, now: float, inp: Input) -> Effects:
        """Advance to ``now`` and process one input; return what the edge must do."""
        self._now = now
        fx = self._fx = Effects()
        if isinstance(inp, Received):
            self._dispatch[type(inp.msg)](inp.src, inp.msg)
        elif isinstance(inp, TimerFired):
            self._on_timer(inp.key)
        elif isinstance(inp, SendFailed):
            self._on_send_failed(inp.msg)
        elif isinstance(inp, Start):
            self._start([addr for _name, addr in inp.seeds])
        elif isinstance(inp, Join):
            self._join(list(inp.addresses))
        elif isinstance(inp, LeaveRequest):
            self._leave()
        elif isinstance(inp, UpdateLocal):
            self._update_local()
        elif isinstance(inp, Retire):
            self._retire(inp.name)
        else:  # pragma: no cover - typing guards this
            raise TypeError(f"unknown input {inp!r}")
        return fx

    # ------------------------------------------------------------- helpers
    def _send(self, name: str, address: str, msg: Message) -> None:
        self._fx.sends.append(Send(name, address, msg))

    def _timer(self, at: float, key: Hashable) -> None:
        self._fx.timers.append(SetTimer(at, key))

    def _event(self, kind: str, m: Member) -> None:
        self._fx.events.append(MemberEvent(kind, m.snapshot()))

    def _piggyback(self) -> tuple[Update, ...]:
        limit = self.config.retransmit_limit(len(self._members))
        return tuple(self._queue.take(self.config.max_piggyback, limit))

    def _state(self) -> tuple[Update, ...]:
        return self._table.state()

    # ----------------------------------------------------------- lifecycle
    def _start(self, seeds: list[str]) -> None:
        if not self._started:
            self._started = True
            cfg, now, uniform = self.config, self._now, self._rng.uniform
            self._probe_due = now + uniform(0.0, cfg.probe_interval)
            self._timer(self._probe_due, "probe")
            self._timer(now + uniform(0.0, cfg.gossip_interval), "gossip")
            first = cfg.probe_interval if cfg.startup_syncs else cfg.push_pull_interval
            self._timer(now + uniform(0.5, 1.0) * first, "push_pull")
            self._timer(now + cfg.push_pull_interval, "reap")
        self._join(seeds)

    def _join(self, addresses: list[str]) -> None:
        for addr in addresses:
            if addr == self.address:
                continue
            if addr not in self._seeds:
                self._seeds.append(addr)
            self._send("", addr, SyncRequest(self.name, self._state(), join=True))

    def _leave(self) -> None:
        if self._leaving:
            return
        self._leaving = True
        me = self._members[self.name]
        me.record = self._make_left_record(self._inc)
        self._set_status(me, LEFT)
        u = Update(LEFT, self.name, self._inc, self.address, me.record, self.name)
        self._queue.push(u)
        for m in self._table.random(self.config.gossip_nodes, lambda m: m.status == ALIVE):
            self._send(m.name, m.address, Leave(u))
        self._event(LEFT, me)

    def _retire(self, name: str) -> None:
        m = self._members.get(name)
        if m is None or name == self.name or m.status == LEFT:
            return
        self._suspicions.pop(name, None)
        self._set_status(m, LEFT)
        self._event(LEFT, m)

    def _update_local(self) -> None:
        if self._leaving:
            return
        self._bump(self._inc + 1)
        self._event("updated", self._members[self.name])

    def _bump(self, inc: int) -> None:
        self._inc = inc
        self._record = self._make_record(inc)
        me = self._members[self.name]
        me.incarnation = inc
        me.record = self._record
        me.touch()
        self._queue.push(Update(ALIVE, self.name, inc, self.address, self._record, self.name))

    def _refute(self, accused: int) -> None:
        # Callers pass only numbers we signed ourselves (never an accuser's number).
        self._bump(max(self._inc, accused) + 1)
        self.awareness.apply(1)

    # --------------------------------------------------------------- timers
    def _on_timer(self, key: Hashable) -> None:
        if key == "gossip":
            self._gossip_tick()
        elif key == "probe":
            self._probe_tick()
        elif key == "push_pull":
            self._push_pull_tick()
        elif key == "reap":
            self._reap_tick()
        elif isinstance(key, tuple):
            kind, arg = key
            if kind == "ptimeout":
                p = self._probe
                if p is not None and p.seq == arg and not p.acked and not p.indirect:
                    self._indirect(p)
            elif kind == "relay":
                relay = self._relays.pop(arg, None)
                if relay is not None:
                    self._send(relay[0], relay[1], Nack(relay[2], self.name))
            elif kind == "suspect":
                self._suspicion_expired(arg)

    def _gossip_tick(self) -> None:
        cfg, now = self.config, self._now
        self._timer(now + cfg.gossip_interval, "gossip")
        if not self._queue:
            return
        horizon = now - cfg.gossip_to_the_dead_time

        def ok(m: Member) -> bool:
            return m.status == ALIVE or m.status == SUSPECT or m.state_change > horizon

        for m in self._table.random(cfg.gossip_nodes, ok):
            updates = self._piggyback()
            if not updates:
                break
            self._send(m.name, m.address, Gossip(self.name, updates))

    def _probe_tick(self) -> None:
        p = self._probe
        cfg, now = self.config, self._now
        if p is not None and not p.acked and not p.stalled:
            if now - self._probe_due > cfg.probe_timeout:
                # Lifeguard local health: this round closes far later than it was due,
                # so our own process stalled (CPU load, a blocked event loop) and an ack
                # that arrived meanwhile may not be processed yet. That is evidence
                # against us, not the target: raise our health score and give the probe
                # a fresh (scaled) timeout instead of accusing the target.
                p.stalled = True
                self.awareness.apply(1)
                self._probe_due = now + self.awareness.scale(cfg.probe_timeout)
                self._timer(self._probe_due, "probe")
                return
        if p is not None and not p.acked:
            self._probe_failed(p)
        self._probe = None
        if self._leaving:
            return
        self._probe_due = now + self.awareness.scale(cfg.probe_interval)
        self._timer(self._probe_due, "probe")
        target = self._table.next_probe_target()
        if target is None:
            return
        self._seq += 1
        p = self._probe = _Probe(self._seq, target.name, target.address, target.incarnation)
        piggyback = self._piggyback()
        if target.status == SUSPECT:  # Lifeguard buddy system: tell it, so it can refute
            buddy = Update(SUSPECT, target.name, target.incarnation, source=self.name)
            piggyback = (buddy, *piggyback)
        self._send(target.name, target.address, Ping(p.seq, self.name, target.name, piggyback))
        self._timer(now + self.awareness.scale(cfg.probe_timeout), ("ptimeout", p.seq))

    def _indirect(self, p: _Probe) -> None:
        p.indirect = True
        peers = self._table.random(
            self.config.indirect_checks, lambda m: m.status == ALIVE, exclude=p.target
        )
        p.expected_nacks = len(peers)
        for m in peers:
            msg = PingReq(p.seq, self.name, p.target, p.address, self._piggyback())
            self._send(m.name, m.address, msg)

    def _probe_failed(self, p: _Probe) -> None:
        if p.expected_nacks > 0:
            self.awareness.apply(max(0, p.expected_nacks - p.nacks))
        else:
            self.awareness.apply(1)
        m = self._members.get(p.target)
        if m is not None and m.status not in GONE:
            self._suspect(Update(SUSPECT, p.target, p.incarnation, source=self.name))

    def _push_pull_tick(self) -> None:
        cfg = self.config
        delay = cfg.push_pull_scaled(len(self._members))
        if self._fast_syncs < cfg.startup_syncs:
            self._fast_syncs += 1
            delay = min(delay, cfg.probe_interval * 2**self._fast_syncs)
        self._timer(self._now + delay, "push_pull")
        if self._leaving:
            return
        self._push_pull_rounds += 1
        others = self._counts[ALIVE] + self._counts[SUSPECT] - 1
        if others <= 0 and self._seeds:
            self._join(list(self._seeds))
            return
        for m in self._table.random(1, lambda m: m.status == ALIVE or m.status == SUSPECT):
            self._send(m.name, m.address, SyncRequest(self.name, self._state()))
        every = cfg.dead_sync_every
        if every and self._counts[DEAD] and self._push_pull_rounds % every == 0:
            for m in self._table.random(1, lambda m: m.status == DEAD):
                self._send(m.name, m.address, SyncRequest(self.name, self._state()))

    def _reap_tick(self) -> None:
        cfg, now = self.config, self._now
        self._timer(now + cfg.push_pull_interval, "reap")
        if not (self._counts[DEAD] or self._counts[LEFT]):
            return
        doomed = [
            m
            for m in self._members.values()
            if m.name != self.name
            and (
                (m.status == DEAD and now - m.state_change > cfg.dead_retention)
                or (m.status == LEFT and now - m.state_change > cfg.left_retention)
            )
        ]
        for m in doomed:
            self._table.remove(m.name)
            self._suspicions.pop(m.name, None)
            self._event("removed", m)

    def _suspicion_expired(self, name: str) -> None:
        s = self._suspicions.get(name)
        if s is None or self._now < s.deadline - 1e-9:
            return
        del self._suspicions[name]
        m = self._members.get(name)
        if m is not None and m.status == SUSPECT:
            self._dead(Update(DEAD, name, m.incarnation, source=self.name))

    # ------------------------------------------------------------- messages
    def _on_ping(self, src: str, msg: Ping) -> None:
        if msg.piggyback:
            self._apply(msg.piggyback)
        if msg.target and msg.target != self.name:
            return
        self._send(msg.source, src, Ack(msg.seq, self.name, self._piggyback()))

    def _on_ping_req(self, src: str, msg: PingReq) -> None:
        if msg.piggyback:
            self._apply(msg.piggyback)
        self._seq += 1
        seq = self._seq
        self._relays[seq] = (msg.source, src, msg.seq)
        self._send(
            msg.target, msg.target_address, Ping(seq, self.name, msg.target, self._piggyback())
        )
        at = self._now + self.config.probe_timeout * self.config.nack_fraction
        self._timer(at, ("relay", seq))

    def _on_ack(self, src: str, msg: Ack) -> None:
        if msg.piggyback:
            self._apply(msg.piggyback)
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            self._send(relay[0], relay[1], Ack(relay[2], self.name, self._piggyback()))
            return
        p = self._probe
        if p is not None and p.seq == msg.seq and not p.acked:
            p.acked = True
            self.awareness.apply(-1)

    def _on_nack(self, src: str, msg: Nack) -> None:
        p = self._probe
        if p is not None and p.seq == msg.seq:
            p.nacks += 1

    def _on_gossip(self, src: str, msg: Gossip) -> None:
        self._apply(msg.updates)

    def _on_sync_request(self, src: str, msg: SyncRequest) -> None:
        self._merge(msg.state, msg.source)
        self._send(msg.source, src, SyncResponse(self.name, self._state()))

    def _on_sync_response(self, src: str, msg: SyncResponse) -> None:
        self._merge(msg.state, msg.source)

    def _on_leave(self, src: str, msg: Leave) -> None:
        if msg.update.kind == LEFT:
            self._left(msg.update)

    def _on_send_failed(self, msg: Message) -> None:
        if isinstance(msg, Ping):
            relay = self._relays.pop(msg.seq, None)
            if relay is not None:
                self._send(relay[0], relay[1], Nack(relay[2], self.name))
                return
            p = self._probe
            if p is not None and p.seq == msg.seq and not p.acked and not p.indirect:
                self._indirect(p)
