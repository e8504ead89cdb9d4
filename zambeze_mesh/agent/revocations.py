"""Revoked certificates inside the agent: learned, persisted, enforced and spread.

A revocation arrives from the local operator (``zmesh members remove`` on the CA
holder, over the Unix socket) or from another agent. Each is checked against the mesh
CA; a new one is persisted, enforced at once (the authorization interceptor and record
verification consult :attr:`Revocations.set`), its member is retired from the view, and
it is passed on to every other member. A periodic exchange with one random member
repairs what a lost message or an agent that was down missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from zambeze_mesh.errors import ZmeshError
from zambeze_mesh.security.revocation import RevocationSet, der_digest, verify_revocation
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.store import names as namestore
from zambeze_mesh.v1 import membership_pb2, membership_pb2_grpc

if TYPE_CHECKING:
    from cryptography import x509

    from zambeze_mesh.agent.gossip import Gossip
    from zambeze_mesh.store import Store
    from zambeze_mesh.transport.channels import ChannelPool

log = logging.getLogger("zambeze_mesh.revocations")

#: Seconds between two anti-entropy exchanges of the known revocations.
ANTI_ENTROPY_S = 5.0
SEND_TIMEOUT_S = 5.0
MAX_PER_REQUEST = 256


class Revocations:
    """This agent's revocations (see the module docstring).

    Built from this agent's ``name`` and ``mesh``, the mesh CA certificate
    (``ca_cert``, which signs revocations) and the ``store`` that keeps them; given
    membership (whom to retire, whom to tell) and the peer channels by :meth:`attach`
    once they exist. Revocations learned before that are enforced and kept, and
    spread by the periodic exchange.
    """

    def __init__(self, *, name: str, mesh: str, ca_cert: x509.Certificate, store: Store) -> None:
        self.name = name
        self.mesh = mesh
        self.ca_cert = ca_cert
        self.store = store
        self.members: Gossip | None = None
        self.channels: ChannelPool | None = None
        self.set = RevocationSet()
        self._signed: dict[bytes, membership_pb2.SignedRevocation] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def load(self) -> None:
        """Enforce the revocations kept in the store (at start, before serving)."""
        for signed in namestore.load_revocations(self.store):
            self._verify_and_add(signed)

    def attach(self, members: Gossip, channels: ChannelPool) -> None:
        """Retire revoked members from ``members`` and tell them, over ``channels``."""
        self.members = members
        self.channels = channels

    def start(self) -> None:
        """Start the periodic exchange (after membership is running)."""
        self._loop_task = asyncio.create_task(self._anti_entropy())

    async def close(self) -> None:
        """Stop the periodic exchange and in-flight sends."""
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        self._loop_task = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _verify_and_add(self, signed: membership_pb2.SignedRevocation) -> str | None:
        """The retired name if ``signed`` is genuine and new, else None."""
        if signed.revocation in self._signed:
            return None
        rev = verify_revocation(signed, self.ca_cert, mesh=self.mesh)
        self._signed[signed.revocation] = signed
        self.set.add(rev)
        return rev.name

    def learn(self, revocations: Iterable[membership_pb2.SignedRevocation], source: str) -> int:
        """Check, persist, enforce and pass on new revocations; returns how many were new."""
        fresh: list[membership_pb2.SignedRevocation] = []
        for signed in list(revocations)[:MAX_PER_REQUEST]:
            try:
                name = self._verify_and_add(signed)
            except ZmeshError as exc:
                log_event(log, "revocation.rejected", level=logging.WARNING, reason=str(exc))
                continue
            if name is None:
                continue
            namestore.save_revocation(self.store, signed)
            fresh.append(signed)
            self._retire_if_revoked(name)
            log_event(log, "revocation.learned", member=name, source=source)
        if fresh:
            self._spawn(self._spread(fresh, exclude={source}))
        return len(fresh)

    def _retire_if_revoked(self, name: str) -> None:
        gossip = self.members
        if gossip is None or name == self.name:
            return
        for m in gossip.members():
            if m.name == name and m.signed is not None:
                if self.set.is_revoked(der_digest(m.signed.cert_der)):
                    gossip.runner.retire(name)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _peers(self) -> list[tuple[str, str]]:
        gossip = self.members
        if gossip is None:
            return []
        return [(m.name, m.address) for m in gossip.alive() if m.name != self.name]

    async def _send(self, address: str, signed: list[membership_pb2.SignedRevocation]) -> None:
        channels = self.channels
        if channels is None:
            return
        req = membership_pb2.RevokeRequest(revocations=signed[:MAX_PER_REQUEST])
        setattr(req, "from", self.name)
        stub = membership_pb2_grpc.MembershipStub(channels.get(address))
        with contextlib.suppress(grpc.RpcError):
            await stub.Revoke(req, timeout=SEND_TIMEOUT_S)

    async def _spread(
        self, signed: list[membership_pb2.SignedRevocation], exclude: set[str]
    ) -> None:
        peers = [(n, a) for n, a in self._peers() if n not in exclude]
        await asyncio.gather(*(self._send(a, signed) for _, a in peers))

    async def _anti_entropy(self) -> None:
        while True:
            await asyncio.sleep(ANTI_ENTROPY_S * random.uniform(0.5, 1.5))
            peers = self._peers()
            if self._signed and peers:
                _, address = random.choice(peers)
                await self._send(address, list(self._signed.values()))
