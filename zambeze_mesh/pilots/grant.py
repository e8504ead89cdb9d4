"""Pilot tokens for agents that do not hold the CA key (``Membership.PilotToken``).

Only a CA holder creates join tokens and checks join proofs. An agent that submits
pilots elsewhere (an HPC login node) asks a CA holder for each pilot's token over its
agent mTLS channel. The CA holder scopes the token to ``<caller>-pilot-`` names, where
``<caller>`` is the name in the caller's certificate, makes it single-use and bounds
its lifetime by :data:`MAX_TTL_S`.

:func:`issue` is the CA holder's side; :func:`obtain` is the submitting side: it keeps
the local path on a CA holder and calls a CA holder otherwise.
"""

from __future__ import annotations

import logging
import time

import grpc

from zambeze_mesh.errors import (
    FailedPrecondition,
    InvalidInput,
    NotPermitted,
    ResourceExhausted,
    Unavailable,
    ZmeshError,
)
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.pilots.tokens import create_pilot_token, outstanding
from zambeze_mesh.security import tokens as tokmod
from zambeze_mesh.security.authz import Caller
from zambeze_mesh.security.keys import der_to_pem
from zambeze_mesh.security.tls import channel_credentials
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store import tokens as tokstore
from zambeze_mesh.store.db import Store
from zambeze_mesh.v1 import membership_pb2, membership_pb2_grpc

log = logging.getLogger("zambeze_mesh.pilots")

#: Longest validity of a pilot token (the job may queue that long before it joins).
MAX_TTL_S = 24 * 3600
#: Longest ``job_hint`` accepted (it only goes to the CA holder's log).
MAX_HINT_CHARS = 128
#: Unspent, unexpired pilot tokens one agent may hold at once (a bound on what a
#: misbehaving agent can mint; a pilot spends its token when it joins).
MAX_OUTSTANDING = 256
#: Seconds to wait for one CA holder's answer.
CALL_TIMEOUT_S = 10.0


def prefix_for(agent_name: str) -> str:
    """The names a pilot token of ``agent_name`` admits: ``<agent_name>-pilot-``."""
    return f"{agent_name}-pilot-"


def issue(
    store: Store, caller: Caller, req: membership_pb2.PilotTokenRequest
) -> membership_pb2.PilotTokenResponse:
    """Mint a pilot token for the agent ``caller`` (CA holder side of ``PilotToken``).

    The scope is taken from the caller's certificate; ``req`` only chooses the lifetime
    (at most :data:`MAX_TTL_S`, 0 for that maximum) and a hint for the log.
    """
    if caller.kind != "agent" or caller.identity is None:
        raise NotPermitted(f"{caller.describe()} may not obtain pilot tokens (agents only)")
    if req.ttl_s > MAX_TTL_S:
        raise InvalidInput(f"a pilot token lives at most {MAX_TTL_S} s, not {req.ttl_s}")
    if len(req.job_hint) > MAX_HINT_CHARS or not req.job_hint.isprintable():
        raise InvalidInput(f"job_hint must be printable and at most {MAX_HINT_CHARS} chars")
    ident = idstore.load_identity(store)
    if ident.ca_key_pem is None:
        holders = ", ".join(name for name, _ in idstore.ca_holders(store)) or "the CA holder"
        raise FailedPrecondition(
            f"agent {ident.name} does not hold the mesh CA key: ask {holders} for pilot tokens"
        )
    ttl_s = req.ttl_s or MAX_TTL_S
    prefix = prefix_for(caller.identity.name)
    held = outstanding(store, prefix)
    if held >= MAX_OUTSTANDING:
        raise ResourceExhausted(
            f"{caller.identity.name} already holds {held} unspent pilot tokens: retry when"
            " its pilots have joined or their tokens expired"
        )
    token = create_pilot_token(store, prefix, ttl_s)
    token_id = tokmod.parse_token(token).token_id
    row = tokstore.get_token(store, token_id)
    expires_ms = row.expires_ms if row is not None else int((time.time() + ttl_s) * 1000)
    log_event(
        log,
        "pilot_token.issued",
        to=caller.identity.name,
        token_id=token_id,
        ttl_s=ttl_s,
        hint=req.job_hint,
    )
    return membership_pb2.PilotTokenResponse(
        token=token, name_prefix=prefix, expires_unix_ms=expires_ms
    )


def obtain(store: Store, name_prefix: str, ttl_s: int, job_hint: str = "") -> str:
    """A pilot token for this agent's ``name_prefix``: made locally on a CA holder,
    else requested from a known CA holder over this agent's mTLS identity.

    Blocking (a synchronous gRPC call): call it from a thread, not an event loop.
    """
    ident = idstore.load_identity(store)
    if ident.ca_key_pem is not None:
        return create_pilot_token(store, name_prefix, ttl_s)
    if name_prefix != prefix_for(ident.name):
        raise InvalidInput(
            f"a CA holder only grants {prefix_for(ident.name)!r} pilot tokens to {ident.name}"
        )
    holders = idstore.ca_holders(store)
    if not holders:
        raise Unavailable(
            f"agent {ident.name} knows no CA holder to ask for a pilot token (it records"
            " the one that signed its certificate when it joins)"
        )
    ca_pem = der_to_pem(ident.ca_cert_der)
    creds = channel_credentials(ident.key_pem, der_to_pem(ident.cert_der), ca_pem)
    hint = job_hint[:MAX_HINT_CHARS]
    req = membership_pb2.PilotTokenRequest(ttl_s=min(ttl_s, MAX_TTL_S), job_hint=hint)
    last: ZmeshError | None = None
    for name, address in holders:
        with grpc.secure_channel(address, creds) as ch:
            stub = membership_pb2_grpc.MembershipStub(ch)
            try:
                resp: membership_pb2.PilotTokenResponse = stub.PilotToken(
                    req, timeout=CALL_TIMEOUT_S
                )
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                if not isinstance(err, Unavailable):
                    raise err from None
                last = err
                log_event(log, "pilot_token.unreachable", level=logging.WARNING, holder=name)
                continue
        if resp.name_prefix != name_prefix:
            raise FailedPrecondition(
                f"CA holder {name} scoped the pilot token to {resp.name_prefix!r},"
                f" not {name_prefix!r}"
            )
        return resp.token
    raise Unavailable(f"no CA holder reachable for a pilot token: {last}")
