"""How a :class:`~zambeze_mesh.data.client.DataClient` reaches holders.

:class:`Peers` gives a channel per address and resolves agent names.
:class:`AgentPeers` uses a running agent's channel pool and gossip view;
:class:`HomePeers` presents the identity stored in an agent home (for the CLI and
tests) and resolves names through that home's running agent or stored members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import grpc

from zambeze_mesh.errors import NotFound, Unavailable
from zambeze_mesh.membership.status import GONE

if TYPE_CHECKING:
    from zambeze_mesh.settings.config import AgentConfig
    from zambeze_mesh.settings.home import Home

__all__ = ["AgentPeers", "HomePeers", "LocalAgent", "Peers", "looks_like_address"]


def looks_like_address(s: str) -> bool:
    """Whether ``s`` is ``host:port`` (agent names never contain ``:``)."""
    host, sep, port = s.rpartition(":")
    return bool(sep and host and port.isdigit())


class Peers(Protocol):
    """How a client reaches holders: a channel per address, and name → address."""

    def channel(self, address: str) -> grpc.aio.Channel:
        """The (mTLS) channel to ``address``."""
        ...

    async def address_of(self, name: str) -> str:
        """The address of agent ``name``."""
        ...

    async def close(self) -> None:
        """Release what this object owns."""
        ...


class _ChannelPool(Protocol):
    def get(self, address: str) -> grpc.aio.Channel: ...


class _TlsIdentity(Protocol):
    @property
    def key_pem(self) -> bytes: ...
    @property
    def cert_der(self) -> bytes: ...
    @property
    def ca_cert_der(self) -> bytes: ...


class _Member(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def address(self) -> str: ...


class _MemberView(Protocol):
    def members(self) -> Sequence[_Member]: ...


class LocalAgent(Protocol):
    """What a data client reads of the running agent it works for (an
    :class:`~zambeze_mesh.agent.agent.Agent` is one): its name, address, config,
    channel pool, TLS identity and membership view (None when not running)."""

    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def config(self) -> AgentConfig: ...
    @property
    def channels(self) -> _ChannelPool | None: ...
    @property
    def identity(self) -> _TlsIdentity | None: ...
    @property
    def gossip(self) -> _MemberView | None: ...


class AgentPeers:
    """Peers of a running agent: its channel pool and its gossip view."""

    def __init__(self, agent: LocalAgent) -> None:
        self.agent = agent

    def channel(self, address: str) -> grpc.aio.Channel:
        """The pooled channel to ``address``."""
        if self.agent.channels is None:
            raise Unavailable("agent is not running")
        return self.agent.channels.get(address)

    def tls_identity(self) -> tuple[bytes, bytes, bytes]:
        """The agent's key, certificate and CA certificate (PEM), for data sockets."""
        from zambeze_mesh.security.keys import der_to_pem

        ident = self.agent.identity
        if ident is None:
            raise Unavailable("agent is not running")
        return ident.key_pem, der_to_pem(ident.cert_der), der_to_pem(ident.ca_cert_der)

    async def address_of(self, name: str) -> str:
        """Look ``name`` up in the gossip view."""
        if name == self.agent.name:
            return self.agent.address
        gossip = self.agent.gossip
        if gossip is None:
            raise Unavailable("membership is not running")
        for m in gossip.members():
            if m.name == name:
                if m.status in GONE:
                    raise Unavailable(f"agent {name!r} is {m.status}")
                return m.address
        raise NotFound(f"no agent named {name!r} in the mesh")

    async def close(self) -> None:
        """Nothing to release: the channels belong to the agent."""


class HomePeers:
    """Peers for a process that is not the agent: it presents the identity of an agent home.

    Names resolve through ``addresses``, else the home's running agent (its Unix
    socket), else the member list last stored in the home.
    """

    def __init__(self, home: Home, addresses: Mapping[str, str] | None = None) -> None:
        from zambeze_mesh.security.keys import der_to_pem
        from zambeze_mesh.security.tls import channel_credentials
        from zambeze_mesh.settings.config import AgentConfig
        from zambeze_mesh.store import Store
        from zambeze_mesh.store import identity as idstore
        from zambeze_mesh.transport.channels import channel_options

        home.require()
        self.home = home
        self.config = AgentConfig.load(home.config)
        self._addresses = dict(addresses or {})
        store = Store(home.db)
        try:
            ident = idstore.load_identity(store)
        finally:
            store.close()
        self._pems = (ident.key_pem, der_to_pem(ident.cert_der), der_to_pem(ident.ca_cert_der))
        self._creds = channel_credentials(*self._pems)
        self._options = channel_options(self.config.max_message_bytes)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def tls_identity(self) -> tuple[bytes, bytes, bytes]:
        """The home's key, certificate and CA certificate (PEM), for data sockets."""
        return self._pems

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to ``address`` presenting the home's agent certificate."""
        ch = self._channels.get(address)
        if ch is None:
            ch = grpc.aio.secure_channel(address, self._creds, options=self._options)
            self._channels[address] = ch
        return ch

    async def address_of(self, name: str) -> str:
        """Resolve ``name`` (explicit map, live agent, stored members)."""
        if name in self._addresses:
            return self._addresses[name]
        if self.home.socket.exists():
            try:
                return await self._ask_agent(name)
            except (grpc.RpcError, Unavailable):
                pass
        return self._from_store(name)

    async def _ask_agent(self, name: str) -> str:
        from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc

        async with grpc.aio.insecure_channel(f"unix:{self.home.socket}") as ch:
            resp = await campaigns_pb2_grpc.CampaignsStub(ch).ListMembers(
                campaigns_pb2.ListMembersRequest(), timeout=10
            )
        for m in resp.members:
            if m.name == name:
                return str(m.address)
        raise NotFound(f"no agent named {name!r} in the mesh (as {resp.self_name} sees it)")

    def _from_store(self, name: str) -> str:
        from zambeze_mesh.store import Store
        from zambeze_mesh.store import members as memstore

        if name == self.config.name:
            if self.home.ports.exists():
                return self.home.ports.read_text().split()[0]
            return self.config.advertise
        store = Store(self.home.db)
        try:
            rows = memstore.load_members(store)
        finally:
            store.close()
        for r in rows:
            if r.name == name:
                return r.address
        raise NotFound(f"no agent named {name!r} is known to this home")

    async def close(self) -> None:
        """Close the channels."""
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
