"""Membership inside the agent: SWIM over gRPC with signed, verified agent records.

This is the edge around :class:`~zambeze_mesh.membership.swim.Swim`: it signs this
agent's record with the agent's own key, verifies every record that arrives against the
mesh CA (forged, tampered or stale ones are dropped and logged), persists the view and
incarnation, and answers the Membership RPCs.

The protocol's step never commits to the store on the event loop: the view and the
incarnation it persists are queued, in order, on a :class:`StoreWriter` thread, so a
slow commit does not hold up probes, acks or gossip. (A crash can lose only the last
queued writes: a restarted agent starts above the stored incarnation and refutes
anything newer its peers hold.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from zambeze_mesh.agent.capabilities import build_capabilities
from zambeze_mesh.clock import SYSTEM_CLOCK, Clock
from zambeze_mesh.errors import ZmeshError
from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.events import MemberEvent, MemberState
from zambeze_mesh.membership.messages import ALIVE, LEFT, Update
from zambeze_mesh.membership.rules import MAX_INCARNATION
from zambeze_mesh.membership.runner import SwimRunner
from zambeze_mesh.membership.swim import Swim
from zambeze_mesh.security.keys import key_from_pem
from zambeze_mesh.security.records import sign_record, verify_record
from zambeze_mesh.security.revocation import der_digest
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.store import Store
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store import members as memstore
from zambeze_mesh.store.writer import StoreWriter
from zambeze_mesh.transport.channels import ChannelPool
from zambeze_mesh.transport.grpc_transport import GrpcTransport
from zambeze_mesh.v1 import common_pb2

log = logging.getLogger("zambeze_mesh.gossip")

#: Seconds between two ``gossip.stats`` log lines (cumulative sent messages and bytes).
STATS_INTERVAL_S = 5.0

PRESETS: dict[str, Callable[[], Config]] = {
    "local": Config.local,
    "lan": Config.lan,
    "wan": Config.wan,
}


@dataclass(frozen=True)
class MemberInfo:
    """A member as the rest of the agent sees it: liveness plus its verified record."""

    name: str
    address: str
    status: str
    incarnation: int
    record: common_pb2.AgentRecord | None
    signed: common_pb2.SignedRecord | None


class Gossip:
    """Runs this agent's membership; the only owner of the SWIM state machine.

    Built from what it uses: the agent's settings (``agent_config``: name, mesh,
    slots, membership preset, capabilities), its advertised addresses, identity and
    the mesh CA certificate, the peer channels, the store (view and incarnation),
    ``is_revoked`` (a certificate's DER digest → revoked?) and a clock for record stamps.
    Its store writes go through ``writer`` (one of its own by default).
    """

    def __init__(
        self,
        *,
        agent_config: AgentConfig,
        address: str,
        admission_address: str,
        identity: idstore.StoredIdentity,
        ca_cert: x509.Certificate,
        channels: ChannelPool,
        store: Store,
        home_root: Path,
        data_dir: Path,
        is_revoked: Callable[[str], bool],
        plugins: list[str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        writer: StoreWriter | None = None,
    ) -> None:
        ident = identity
        self.agent_config = agent_config
        self.name = agent_config.name
        self.mesh = agent_config.mesh
        self.address = address
        self.admission_address = admission_address
        self.store = store
        self.home_root = home_root
        self.data_dir = data_dir
        self.is_revoked = is_revoked
        self.clock = clock
        self.writer = writer or StoreWriter("gossip-store")
        self._key = key_from_pem(ident.key_pem)
        self._cert_der = ident.cert_der
        self._ca_cert = ca_cert
        self.rejected = 0
        self._free_slots = agent_config.slots
        self._plugins: list[str] = list(plugins or [])
        self._scheduler = ""
        self._partitions: list[str] = []
        self._records: dict[str, common_pb2.AgentRecord] = {}
        self._started = False
        self._stats_task: asyncio.Task[None] | None = None
        self.transport = GrpcTransport(channels, address)
        # A restarted agent resumes above every incarnation it ever used.
        start_inc = idstore.bump_incarnation(store, ident.incarnation + 1)
        if start_inc >= MAX_INCARNATION:
            # Pushed there by a forged accusation before deaths were bounded by what the
            # subject signed: peers drop such numbers, so start low; our own signed
            # records, synced back, lift us just above what they hold.
            log_event(log, "gossip.incarnation_reset", level=logging.WARNING, was=start_inc)
            start_inc = idstore.reset_incarnation(store, 1)
        self.config = PRESETS[agent_config.membership]()
        self.swim = Swim(
            self.name,
            address,
            self.config,
            random.Random(),
            self._make_record,
            accept=self._accept,
            incarnation=start_inc,
            make_left_record=self._make_left_record,
        )
        self.runner = SwimRunner(self.swim, self.transport)
        self.runner.add_listener(self._on_event)

    # ----------------------------------------------------------- records
    def _record(self, inc: int, status: int) -> common_pb2.SignedRecord:
        rec = common_pb2.AgentRecord(
            name=self.name,
            mesh=self.mesh,
            address=self.address,
            admission_address=self.admission_address,
            incarnation=inc,
            capabilities=build_capabilities(
                self.agent_config,
                plugins=self._plugins,
                free_slots=self._free_slots,
                data_dir=self.data_dir,
                home=self.home_root,
                scheduler=self._scheduler,
                partitions=self._partitions,
            ),
            status=status,  # type: ignore[arg-type]
            issued_unix_ms=int(self.clock.time() * 1000),
        )
        self._records[self.name] = rec
        self.writer.write("incarnation", idstore.bump_incarnation, self.store, inc)
        return sign_record(self._key, self._cert_der, rec)

    def _make_record(self, inc: int) -> common_pb2.SignedRecord:
        return self._record(inc, common_pb2.MEMBER_STATUS_ALIVE)

    def _make_left_record(self, inc: int) -> common_pb2.SignedRecord:
        return self._record(inc, common_pb2.MEMBER_STATUS_LEFT)

    def _accept(self, u: Update) -> bool:
        """Believe an alive/left update only if its record is genuine and matches it."""
        signed = u.record
        try:
            if not isinstance(signed, common_pb2.SignedRecord):
                raise ZmeshError("no signed record")
            rec = verify_record(signed, self._ca_cert, mesh=self.mesh)
            if self.is_revoked(der_digest(signed.cert_der)):
                raise ZmeshError("record certificate was revoked")
            want = (
                common_pb2.MEMBER_STATUS_LEFT if u.kind == LEFT else common_pb2.MEMBER_STATUS_ALIVE
            )
            if rec.name != u.name:
                raise ZmeshError(f"record names {rec.name!r}")
            if rec.address != u.address or rec.incarnation != u.incarnation:
                raise ZmeshError("update does not match its signed record")
            if rec.status != want:
                raise ZmeshError("record status does not match the update")
        except ZmeshError as exc:
            self.rejected += 1
            log_event(
                log,
                "gossip.record_rejected",
                level=logging.WARNING,
                member=u.name,
                kind=u.kind,
                reason=str(exc),
            )
            return False
        self._records[rec.name] = rec
        return True

    # ----------------------------------------------------------- life cycle
    async def start(self) -> None:
        """Join through the members this home remembers and start gossiping."""
        seeds = [
            (row.name, row.address)
            for row in memstore.load_members(self.store)
            if row.name != self.name and row.status != "left"
        ]
        await self.runner.start(seeds)
        self._started = True
        log_event(log, "gossip.started", seeds=[s[0] for s in seeds])
        self._stats_task = asyncio.create_task(self._stats_loop())

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            self._log_stats()

    def _log_stats(self) -> None:
        t = self.transport
        log_event(
            log,
            "gossip.stats",
            sent=t.sent,
            sent_bytes=t.sent_bytes,
            rejected=self.rejected,
            members=len(self.runner.members()),
        )

    async def leave(self) -> None:
        """Gossip our departure (status ``left``), then stop."""
        await self.runner.leave(drain=max(1.0, 4 * self.config.gossip_interval))
        self._persist()
        await self.writer.flush()

    async def stop(self) -> None:
        """Stop gossiping (idempotent) and persist the last view."""
        task, self._stats_task = self._stats_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._log_stats()
        await self.runner.close()
        self._persist()
        await self.writer.close()  # everything queued is written

    # ----------------------------------------------------------- view
    def members(self) -> list[MemberInfo]:
        """Every known member, ourselves included."""
        return [self._info(m) for m in self.runner.members()]

    def _info(self, m: MemberState) -> MemberInfo:
        signed = m.record if isinstance(m.record, common_pb2.SignedRecord) else None
        return MemberInfo(
            m.name, m.address, m.status, m.incarnation, self._records.get(m.name), signed
        )

    def record_of(self, name: str) -> common_pb2.AgentRecord | None:
        """The latest verified record of ``name`` (our own included)."""
        return self._records.get(name)

    def address_of(self, name: str) -> str | None:
        """Where to call the member ``name`` (None when unknown or gone for good)."""
        for m in self.runner.members():
            if m.name == name and m.status != LEFT:
                return str(m.address)
        return None

    def alive(self) -> list[MemberInfo]:
        """Members currently alive (or suspect, still usable)."""
        return [m for m in self.members() if m.status in (ALIVE, "suspect")]

    def signed_records(self) -> list[common_pb2.SignedRecord]:
        """Signed records of the members not known to be gone."""
        return [m.signed for m in self.members() if m.signed is not None and m.status != LEFT]

    def events(self) -> AsyncIterator[MemberEvent]:
        """Member events from now on."""
        return self.runner.events()

    def set_load(self, free_slots: int) -> None:
        """Free slots changed: re-sign the record so gossip carries the new load."""
        if free_slots != self._free_slots and self._started:
            self._free_slots = free_slots
            self.runner.update_local()

    def set_capabilities(
        self, plugins: list[str], scheduler: str = "", partitions: list[str] | None = None
    ) -> None:
        """Plugins or scheduler changed: re-sign and gossip."""
        self._plugins = list(plugins)
        self._scheduler = scheduler
        self._partitions = list(partitions or [])
        if self._started:
            self.runner.update_local()

    async def introduce(self, name: str, address: str) -> None:
        """A new member was admitted here: remember it so we sync with it once it runs."""
        row = memstore.MemberRow(name, address, "", 0, "joining", None)
        await self.writer.run(memstore.upsert_members, self.store, [row])

    async def on_rpc(self, pb: object) -> object | None:
        """Answer one Membership RPC (caller already authenticated by the servicer)."""
        src = f"rpc:{getattr(pb, 'from', '') or 'leave'}"
        return await self.transport.handle(src, pb)

    # ----------------------------------------------------------- events
    def _on_event(self, ev: MemberEvent) -> None:
        m = ev.member
        log_event(log, f"member.{ev.kind}", member=m.name, incarnation=m.incarnation)
        if ev.kind in ("alive", "dead", "left", "suspect", "updated"):
            self._persist_one(m)

    def _persist_one(self, m: MemberState) -> None:
        if m.name == self.name:
            return
        rec = self._records.get(m.name)
        signed = m.record if isinstance(m.record, common_pb2.SignedRecord) else None
        row = memstore.MemberRow(
            m.name,
            m.address,
            rec.admission_address if rec else "",
            m.incarnation,
            m.status,
            signed.SerializeToString() if signed else None,
        )
        self.writer.write("member", memstore.upsert_members, self.store, [row])

    def _persist(self) -> None:
        for m in self.runner.members():
            self._persist_one(m)
