"""mTLS credentials read from an agent home: what whoever holds that home has."""

from __future__ import annotations

from pathlib import Path

import grpc

from zambeze_mesh.agent.bootstrap import open_store
from zambeze_mesh.security.keys import der_to_pem
from zambeze_mesh.security.tls import channel_credentials
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore


def home_credentials(home: Path | Home) -> grpc.ChannelCredentials:
    """Channel credentials with the identity of the agent whose home is ``home``
    (its key file, certificate and CA)."""
    store = open_store(home if isinstance(home, Home) else Home(home))
    try:
        ident = idstore.load_identity(store)
    finally:
        store.close()
    return channel_credentials(
        ident.key_pem, der_to_pem(ident.cert_der), der_to_pem(ident.ca_cert_der)
    )
