"""The composition root: one :class:`Agent` per resource.

It builds the store, identity, TLS credentials, gRPC servers, membership and the
services on top, starts them in order and stops them in reverse order. Servicers only
translate protobuf to library calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from zambeze_mesh.agent.contractor import Contractor
from zambeze_mesh.agent.databrowse import DataBrowser
from zambeze_mesh.agent.datalistener import start_data_listener
from zambeze_mesh.agent.datasvc import DataService, build_data_service
from zambeze_mesh.agent.gossip import Gossip
from zambeze_mesh.agent.monitor import Monitor
from zambeze_mesh.agent.placement import Placement
from zambeze_mesh.agent.reporter import Reporter
from zambeze_mesh.agent.revocations import Revocations
from zambeze_mesh.agent.servicers.data import DataServicer
from zambeze_mesh.agent.servicers.scheduling import SchedulingService
from zambeze_mesh.agent.servicers.streams import ServedStreams
from zambeze_mesh.agent.staging import Stager
from zambeze_mesh.data.tlsserve import DataListener
from zambeze_mesh.errors import AlreadyExists, Unavailable
from zambeze_mesh.execution import PluginRegistry
from zambeze_mesh.execution.loading import load_registry, scheduler_facts
from zambeze_mesh.execution.sandbox import Sandbox
from zambeze_mesh.membership.discovery import Advertisement, Advertiser, interface_for
from zambeze_mesh.membership.events import MemberEvent
from zambeze_mesh.security import keyfiles
from zambeze_mesh.security.authz import AuthorizationInterceptor
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.keys import cert_from_pem, der_to_pem, key_from_pem
from zambeze_mesh.security.tls import channel_credentials, server_credentials
from zambeze_mesh.settings.config import AgentConfig, join_hostport, split_hostport
from zambeze_mesh.settings.home import Home, HomeLock
from zambeze_mesh.settings.logs import log_event, setup_logging
from zambeze_mesh.settings.policy import ExecutionPolicy
from zambeze_mesh.store import Store
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.transport.channels import ChannelPool
from zambeze_mesh.transport.scheduling import InProcessScheduling, Routed
from zambeze_mesh.transport.scheduling_grpc import GrpcScheduling
from zambeze_mesh.v1 import (
    campaigns_pb2,
    campaigns_pb2_grpc,
    data_pb2,
    data_pb2_grpc,
    membership_pb2,
    membership_pb2_grpc,
    scheduling_pb2,
    scheduling_pb2_grpc,
)

if TYPE_CHECKING:
    from zambeze_mesh.agent.pilot_scaler import PilotScaler
    from zambeze_mesh.agent.servicers.campaigns import CampaignsServicer
    from zambeze_mesh.agent.servicers.membership import MembershipServicer
    from zambeze_mesh.data.client import FetchResult
    from zambeze_mesh.ui.embedded import EmbeddedUi

log = logging.getLogger("zambeze_mesh.agent")

SERVICE_NAMES = (
    campaigns_pb2.DESCRIPTOR.services_by_name["Campaigns"].full_name,
    membership_pb2.DESCRIPTOR.services_by_name["Membership"].full_name,
    scheduling_pb2.DESCRIPTOR.services_by_name["Scheduling"].full_name,
    data_pb2.DESCRIPTOR.services_by_name["Data"].full_name,
)


class Agent:
    """One mesh agent: the gRPC servers and every service behind them.

    Life cycle: ``await start()`` → serving; ``await leave()`` announces a graceful
    departure; ``await shutdown()`` flips health to NOT_SERVING, stops accepting calls,
    lets running ones finish within a grace period, then releases everything.
    """

    def __init__(
        self, home: Home, *, log_to_file: bool = True, ca_passphrase: bytes | None = None
    ) -> None:
        self.home = home
        home.require()
        self.config = AgentConfig.load(home.config)
        self._data_dir = (home.root / self.config.data_dir).absolute()
        #: Who may run what here (``[policy]`` in config.toml; see settings.policy).
        self.execution_policy = ExecutionPolicy.from_config(self.config.policy)
        self._log_to_file = log_to_file
        self._log_handler: logging.Handler | None = None
        self._lock = HomeLock(home)
        self.store: Store | None = None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.address = self.config.advertise
        self.admission_address = self.config.admission_advertise
        self._stopped = asyncio.Event()
        self._started = False
        self.channels: ChannelPool | None = None
        self.ca: MeshCA | None = None
        self._ca_passphrase = ca_passphrase
        #: True on a CA holder whose encrypted CA key was not unlocked: it signs nothing.
        self.ca_locked = False
        self.sandbox: Sandbox | None = None
        self.identity: idstore.StoredIdentity | None = None
        self.gossip: Gossip | None = None
        self.registry: PluginRegistry | None = None
        self.monitor: Monitor | None = None
        self.contractor: Contractor | None = None
        self.placement: Placement | None = None
        self.advertiser: Advertiser | None = None
        self.web_view: EmbeddedUi | None = None  # `ui_listen`
        self.pilot_scaler: PilotScaler | None = None
        self.data_listener: DataListener | None = None
        self.revocations: Revocations | None = None
        self._datasvc: DataService | None = None
        #: Answers Scheduling calls (gRPC, and this agent's own in-process ones).
        self.scheduling = SchedulingService(self.config.name)
        #: The long-lived streams the server holds open; ended first when stopping.
        self.streams = ServedStreams()
        #: Answers Data calls once the data service is built (``fault``: a test hook).
        self.data_servicer = DataServicer(self.config)
        self.membership_servicer: MembershipServicer | None = None
        self.campaigns_servicer: CampaignsServicer | None = None

    @property
    def name(self) -> str:
        """This agent's name."""
        return self.config.name

    @property
    def mesh(self) -> str:
        """The mesh this agent belongs to."""
        return self.config.mesh

    async def start(self) -> None:
        """Take the home lock, open the store, bind every listener and start serving."""
        self._lock.acquire()
        try:
            await self._start()
        except BaseException:
            await self._teardown(grace=0)
            raise
        self._started = True

    async def _start(self) -> None:
        if self._log_to_file:
            self._log_handler = setup_logging(
                self.name,
                self.home.log,
                self.config.log_level,
                max_bytes=self.config.log_max_bytes,
                backups=self.config.log_backups,
            )
        self.store = Store(self.home.db)
        self.identity = idstore.load_identity(self.store)
        ident = self.identity
        self.ca = self._load_ca(ident)
        key_pem = ident.key_pem
        cert_pem = der_to_pem(ident.cert_der)
        key_from_pem(key_pem)  # fail early on a damaged key
        self.revocations = Revocations(
            name=self.name, mesh=self.mesh, ca_cert=self.ca.cert, store=self.store
        )
        self.revocations.load()
        self.channels = ChannelPool(
            channel_credentials(key_pem, cert_pem, self.ca.cert_pem), self.config.max_message_bytes
        )
        limit = self.config.max_message_bytes
        self.server = grpc.aio.server(
            interceptors=[
                AuthorizationInterceptor(
                    self.mesh, self.ca.cert, revoked=self.revocations.set.cert_revoked
                )
            ],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ],
        )
        self._add_services(self.server)
        creds = server_credentials(key_pem, cert_pem, self.ca.cert_pem)
        self.address = self._bind(
            lambda a: self.server.add_secure_port(a, creds),
            self.config.listen,
            self.config.advertise,
        )
        self.admission_address = self._bind(
            self.server.add_insecure_port,
            self.config.admission_listen,
            self.config.admission_advertise,
        )
        self._datasvc = build_data_service(
            self.config,
            home_root=self.home.root,
            data_dir=self.data_dir,
            store=self.store,
            address=self.address,
        )
        self.data_servicer.attach(self._datasvc)
        if self.campaigns_servicer is not None:
            self.campaigns_servicer.attach_data(DataBrowser(self.name, self._datasvc, self))
        sock = self.home.socket
        self.home.prepare_socket_dir()
        if sock.exists():
            sock.unlink()
        old_umask = os.umask(0o177)
        try:
            self.server.add_insecure_port(f"unix:{sock}")
            await self.server.start()
        finally:
            os.umask(old_umask)
        os.chmod(sock, 0o600)
        self.data_listener = await asyncio.to_thread(start_data_listener, self)
        await self._start_services()
        for service in (*SERVICE_NAMES, ""):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.config.ui_listen:
            from zambeze_mesh.ui.embedded import start_embedded

            self.web_view = await start_embedded(self.home, self.config.ui_listen)
        tmp = self.home.ports.with_suffix(".tmp")
        tmp.write_text(f"{self.address}\n{self.admission_address}\n")
        tmp.replace(self.home.ports)  # readers never see a half-written file
        log_event(
            log,
            "agent.started",
            address=self.address,
            admission=self.admission_address,
            pid=os.getpid(),
        )

    def _make_sandbox(self) -> Sandbox:
        """The activities' sandbox from the config; a loud warning when there is none."""
        cfg = self.config
        roots = [self.home.root / r for r in cfg.exported_roots]
        sandbox = Sandbox(
            cfg.sandbox,
            home=self.home.root,
            data_dir=self._data_dir,
            exported_roots=roots,
            run_as=cfg.run_as,
        )
        if sandbox.warning:
            log_event(log, "sandbox.none", level=logging.WARNING, why=sandbox.warning)
        else:
            log_event(log, "sandbox.on", kind=sandbox.kind)
        return sandbox

    def _load_ca(self, ident: idstore.StoredIdentity) -> MeshCA:
        """The mesh CA, with its key when this agent holds it (unlocked if encrypted)."""
        cert_pem = der_to_pem(ident.ca_cert_der)
        if ident.ca_key_pem is None:
            return MeshCA.from_pem(cert_pem)
        passphrase = self._ca_passphrase or keyfiles.passphrase_from(None)
        if ident.ca_key_encrypted and passphrase is None:
            self.ca_locked = True
            log_event(
                log,
                "ca.locked",
                level=logging.WARNING,
                why="the CA key is encrypted and no passphrase was given: this agent signs"
                " no joins until restarted with --ca-passphrase-file",
            )
            return MeshCA.from_pem(cert_pem)
        return MeshCA(cert_from_pem(cert_pem), keyfiles.unlock_ca_key(ident.ca_key_pem, passphrase))

    def _bind(self, add: object, listen: str, advertise: str) -> str:
        """Bind ``listen``; return the advertised address with the real port filled in."""
        try:
            port = add(listen)  # type: ignore[operator]
        except RuntimeError as exc:
            del exc
            raise AlreadyExists(f"cannot listen on {listen}: address in use") from None
        if port == 0:
            raise AlreadyExists(f"cannot listen on {listen}: address in use or not available")
        host, adv_port = split_hostport(advertise)
        return join_hostport(host, port if adv_port == 0 else adv_port)

    def _add_services(self, server: grpc.aio.Server) -> None:
        from zambeze_mesh.agent.admission import Admission
        from zambeze_mesh.agent.servicers.campaigns import CampaignsServicer
        from zambeze_mesh.agent.servicers.membership import MembershipServicer
        from zambeze_mesh.agent.servicers.scheduling import SchedulingServicer

        assert self.store is not None and self.revocations is not None
        self.membership_servicer = MembershipServicer(
            name=self.name,
            admission=Admission(self),
            revocations=self.revocations,
            store=self.store,
            ca_locked=self.ca_locked,
        )
        membership_pb2_grpc.add_MembershipServicer_to_server(self.membership_servicer, server)
        self.campaigns_servicer = CampaignsServicer(
            name=self.name,
            mesh=self.mesh,
            admins=self.config.admins,
            streams=self.streams,
            store=self.store,
            source=self,
        )
        campaigns_pb2_grpc.add_CampaignsServicer_to_server(self.campaigns_servicer, server)
        scheduling_pb2_grpc.add_SchedulingServicer_to_server(
            SchedulingServicer(self.scheduling, self.streams), server
        )
        data_pb2_grpc.add_DataServicer_to_server(self.data_servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    async def _start_services(self) -> None:
        """Start membership and the services above it (in dependency order)."""
        assert self.store is not None and self.identity is not None and self.ca is not None
        cfg = self.config
        self.sandbox = self._make_sandbox()
        # Plugins and their options from the config (execution/loading.py); with a
        # `scheduler`, shell/python activities go to the batch plugin.
        self.registry = load_registry(cfg, self.data_dir)
        assert self.channels is not None and self.revocations is not None
        self.gossip = Gossip(
            agent_config=cfg,
            address=self.address,
            admission_address=self.admission_address,
            identity=self.identity,
            ca_cert=self.ca.cert,
            channels=self.channels,
            store=self.store,
            home_root=self.home.root,
            data_dir=self.data_dir,
            is_revoked=self.revocations.set.is_revoked,
            plugins=self.registry.names(),
        )
        self.revocations.attach(self.gossip, self.channels)
        if self.membership_servicer is not None:
            self.membership_servicer.attach(self.gossip)
        await self.gossip.start()
        self.revocations.start()
        # Advertise the batch scheduler and its partitions (re-signs the record).
        self.gossip.set_capabilities(self.registry.names(), *scheduler_facts(self.registry))
        # One Scheduling seam: this agent's own contractor and monitor in-process,
        # every other agent over gRPC (by the address membership knows).
        transport = Routed(
            self.name,
            InProcessScheduling(self.name, self.scheduling),
            GrpcScheduling(self.channels, self.gossip.address_of),
        )
        self.monitor = Monitor(self)
        reporter = Reporter(name=self.name, store=self.store, transport=transport)
        stager = Stager(
            name=self.name,
            mesh=self.mesh,
            data_dir=self.data_dir,
            data=self.datasvc,
            fetch=self._fetch,
        )
        self.contractor = Contractor(
            name=self.name,
            mesh=self.mesh,
            slots=cfg.slots,
            max_queued=cfg.max_queued,
            sandbox_functions=cfg.sandbox_functions,
            data_dir=self.data_dir,
            policy=self.execution_policy,
            store=self.store,
            members=self.gossip,
            catalog=self.datasvc.catalog,
            sandbox=self.sandbox,
            registry=self.registry,
            reporter=reporter,
            stager=stager,
        )
        self.scheduling.attach(self.contractor, self.monitor)
        await self.contractor.start()
        self.placement = Placement(
            name=self.name,
            mesh=self.mesh,
            max_message_bytes=cfg.max_message_bytes,
            monitor=self.monitor,
            members=self.gossip,
            transport=transport,
        )
        await self.monitor.start(self.placement)
        if self.campaigns_servicer is not None:
            self.campaigns_servicer.attach(monitor=self.monitor, members=self.gossip)
        self.gossip.runner.add_listener(self._on_member_event)
        self._start_pilot_scaler()
        if self.config.zeroconf:
            await self._advertise()

    def _start_pilot_scaler(self) -> None:
        """With a scheduler and ``[pilots] max > 0``: submit pilots for the backlog."""
        from zambeze_mesh.agent.pilot_scaler import PilotScaler
        from zambeze_mesh.settings.pilots import PilotPolicy

        policy = PilotPolicy.from_table(self.config.pilots) if self.config.pilots else None
        if not self.config.scheduler or policy is None or policy.max <= 0:
            return
        self.pilot_scaler = PilotScaler(self, policy)
        if self.placement is not None:
            self.placement.hold = self.pilot_scaler.hold
        self.pilot_scaler.start()

    async def _advertise(self) -> None:
        """Advertise ``_zmesh._tcp`` on the listening interface (best effort)."""
        assert self.identity is not None
        ad = Advertisement(
            self.name,
            self.mesh,
            self.address,
            self.admission_address,
            hashlib.sha256(self.identity.ca_cert_der).hexdigest(),
        )
        advertiser = Advertiser(ad, interface_for(self.config.listen, self.address))
        try:
            await advertiser.start()
        except Exception as exc:  # discovery is a convenience: never fail the agent
            log_event(log, "zeroconf.failed", level=logging.WARNING, reason=str(exc))
            return
        self.advertiser = advertiser

    def _on_member_event(self, ev: MemberEvent) -> None:
        if ev.kind in ("dead", "left") and ev.member.name != self.name:
            if self.placement is not None:
                self.placement.member_down(ev.member.name)
            if self.monitor is not None:
                self.monitor.member_down(ev.member.name)

    async def serve_forever(self) -> None:
        """Block until :meth:`shutdown` is called (e.g. from a signal handler)."""
        await self._stopped.wait()

    async def leave(self) -> None:
        """Announce a graceful departure to the mesh (members mark this agent ``left``)."""
        if self.gossip is not None:
            await self.gossip.leave()
        log_event(log, "agent.left")

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop serving: health NOT_SERVING first, then a graceful gRPC stop."""
        if not self._started:
            return
        self._started = False
        await self.health.enter_graceful_shutdown()
        await self._teardown(grace)
        log_event(log, "agent.stopped")
        self._stopped.set()

    async def _teardown(self, grace: float) -> None:
        # Report streams and Watches would hold the server for its whole grace period:
        # end them now (peers resend or resume; nothing is lost).
        self.streams.stop()
        if self.web_view is not None:
            web_view, self.web_view = self.web_view, None
            await web_view.close()
        if self.pilot_scaler is not None:
            await self.pilot_scaler.close()
        if self.advertiser is not None:
            advertiser, self.advertiser = self.advertiser, None
            try:
                await advertiser.close()
            except Exception as exc:
                log_event(log, "zeroconf.failed", level=logging.WARNING, reason=str(exc))
        if self.placement is not None:
            await self.placement.close()
        if self.monitor is not None:
            await self.monitor.close()
        if self.contractor is not None:
            await self.contractor.close()
        if self.revocations is not None:
            await self.revocations.close()
        if self.gossip is not None:
            await self.gossip.stop()
        if self.registry is not None:
            await self.registry.close()
        if self.data_listener is not None:
            listener, self.data_listener = self.data_listener, None
            await asyncio.to_thread(listener.close)
        if self.server is not None:
            await self.server.stop(grace)
        if self.channels is not None:
            await self.channels.close()
        if self.store is not None:
            self.store.close()
        try:
            self.home.socket.unlink()
        except FileNotFoundError:
            pass
        if self._log_handler is not None:
            logging.getLogger("zambeze_mesh").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        self._lock.release()

    @property
    def data_dir(self) -> Path:
        """The agent's data directory (``@agentdir``)."""
        return self._data_dir

    @property
    def datasvc(self) -> DataService:
        """This agent's data service (sandbox, catalog, grants) once it is started."""
        if self._datasvc is None:
            raise Unavailable("agent is not running")
        return self._datasvc

    async def _fetch(self, holder: str, path: str, dest: Path) -> FetchResult:
        """Pull ``holder``'s ``path`` into ``dest`` (the stager's data fabric)."""
        from zambeze_mesh.data.client import DataClient

        return await DataClient(self).fetch(holder, path, dest)

    def require_store(self) -> Store:
        """The open store (raises when the agent is not running)."""
        if self.store is None:
            raise Unavailable("agent is not running")
        return self.store
