"""The agent's ``tls-stream`` data listener: wiring of :class:`DataListener` to the agent.

Started after the gRPC server when ``tls-stream`` is in ``transfer_methods``; it
serves with the agent's own key and certificate, trusts only the mesh CA, checks
grants with the agent's :class:`~zambeze_mesh.agent.datasvc.DataService` and uses
the same per-peer stream limit and idle timeout as ``Fetch``. Tests may set
``agent.tls_data_fault`` (a :data:`~zambeze_mesh.data.tlsserve.FrameFault`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zambeze_mesh.data.methods import TLS_STREAM
from zambeze_mesh.data.tlsserve import DataListener, FrameFault
from zambeze_mesh.data.tlswire import server_context
from zambeze_mesh.security.keys import der_to_pem
from zambeze_mesh.settings.config import split_hostport

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent

__all__ = ["start_data_listener"]


def start_data_listener(agent: Agent) -> DataListener | None:
    """Start ``agent``'s data listener (None when ``tls-stream`` is not configured)."""
    cfg = agent.config
    if TLS_STREAM not in cfg.transfer_methods:
        return None
    ident = agent.identity
    assert ident is not None and agent.ca is not None
    host, port = split_hostport(cfg.data_listen or cfg.listen)
    if not cfg.data_listen:
        port = 0
    ctx = server_context(ident.key_pem, der_to_pem(ident.cert_der), der_to_pem(ident.ca_cert_der))
    svc = agent.datasvc

    def fault() -> FrameFault | None:
        hook: FrameFault | None = getattr(agent, "tls_data_fault", None)
        return hook

    listener = DataListener(
        ctx,
        svc.fetch_target,
        mesh=agent.mesh,
        ca_cert=agent.ca.cert,
        host=host,
        port=port,
        port_range=(cfg.data_ports[0], cfg.data_ports[1]) if cfg.data_ports else None,
        max_per_peer=cfg.max_streams_per_peer,
        idle_timeout_s=cfg.stream_idle_timeout_s,
        fault=fault,
    )
    svc.serve_tls_stream(listener.start())
    return listener
