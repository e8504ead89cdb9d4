"""Joining an existing mesh (the joiner's side of ``Membership.Join``).

Nothing is written to the new home until the seed has answered with a certificate that
chains to the CA pinned by the token's digest and carries this joiner's own public key,
so a refused join leaves the home exactly as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from zambeze_mesh.agent.approval import APPROVAL_MARK
from zambeze_mesh.agent.bootstrap import prepare_home, write_identity
from zambeze_mesh.errors import FailedPrecondition, ResourceExhausted, Unauthenticated, Unavailable
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.membership.status import MemberStatus
from zambeze_mesh.security import tokens as tokmod
from zambeze_mesh.security.ca import MeshCA
from zambeze_mesh.security.identity import Identity, validate_name
from zambeze_mesh.security.keys import (
    cert_from_der,
    generate_key,
    key_to_pem,
    make_csr,
)
from zambeze_mesh.security.records import verify_record
from zambeze_mesh.settings.config import AgentConfig, admission_for, split_hostport
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store import members as memstore
from zambeze_mesh.v1 import membership_pb2, membership_pb2_grpc

JOIN_TIMEOUT_S = 15.0
#: How long a joiner keeps retrying when the seed says it is rate-limited.
RATE_LIMIT_PATIENCE_S = 60.0
#: Seconds between two join attempts while the operator has not approved this joiner.
APPROVAL_POLL_S = 1.0
_RETRY_RE = re.compile(r"retry in ([0-9]+(?:\.[0-9]+)?) s")


@dataclass(frozen=True)
class JoinResult:
    """What a successful join produced."""

    config: AgentConfig
    mesh: str
    signed_by: str
    members: list[str]


async def join_mesh(
    home: Home,
    seed: str,
    token: str,
    *,
    name: str,
    listen: str,
    advertise: str = "",
    seed_admission: str = "",
    labels: dict[str, str] | None = None,
    approval_timeout_s: float = 600.0,
    on_pending: Callable[[str], None] | None = None,
    **config: object,
) -> JoinResult:
    """Obtain a certificate through ``seed`` (its agent address) and create ``home``.

    The seed is contacted on its admission address: ``seed_admission`` when given,
    else the seed's port + 1. When the mesh needs an operator to approve joins, this
    waits (calling ``on_pending`` once with the CA holder's message) for up to
    ``approval_timeout_s``.
    """
    validate_name(name, "agent name")
    parsed = tokmod.parse_token(token)
    split_hostport(seed)
    if home.exists():
        prepare_home(home)  # raises AlreadyExists with a clear message
    cfg = AgentConfig(
        name=name,
        mesh="pending",
        listen=listen,
        advertise=advertise,
        labels=dict(labels or {}),
        **config,  # type: ignore[arg-type]
    )
    target = seed_admission or admission_for(seed)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = membership_pb2_grpc.MembershipStub(channel)
        pin = await _call(stub, membership_pb2.JoinRequest(ca_digest=parsed.ca_digest), target)
        ca_digest = hashlib.sha256(pin.ca_cert_der).hexdigest()
        if ca_digest != parsed.ca_digest:
            raise Unauthenticated(
                f"the seed at {seed} belongs to a mesh whose CA digest is {ca_digest[:16]}…, "
                f"not the token's {parsed.ca_digest[:16]}…: refusing to send the join proof"
            )
        ca = MeshCA(cert_from_der(pin.ca_cert_der))
        mesh = ca.mesh
        cfg.mesh = mesh
        key = generate_key()
        identity = Identity.agent(mesh, name)
        csr = make_csr(key, identity)
        give_up = time.monotonic() + approval_timeout_s
        while True:
            req = membership_pb2.JoinRequest(
                ca_digest=parsed.ca_digest,
                token_id=parsed.token_id,
                csr_der=csr,
                name=name,
                advertise=cfg.advertise,
                admission_advertise=cfg.admission_advertise,
                time_unix_ms=int(time.time() * 1000),
            )
            req.proof = tokmod.proof_for(parsed.secret, tokmod.JoinFields.from_request(req))
            try:
                resp = await _call(stub, req, target)
                break
            except FailedPrecondition as exc:
                # The mesh wants an operator to approve this key: ask again (a fresh
                # proof each time) until approved or out of patience.
                if APPROVAL_MARK not in str(exc) or time.monotonic() > give_up:
                    raise
                if on_pending is not None:
                    on_pending(str(exc))
                    on_pending = None
                await asyncio.sleep(APPROVAL_POLL_S)
    if resp.ca_cert_der != pin.ca_cert_der:
        raise Unauthenticated("the seed answered with another CA than the one pinned")
    got = ca.verify(resp.cert_der)
    if got != identity:
        raise Unauthenticated(f"the seed issued a certificate for {got}, not {identity}")
    if cert_from_der(resp.cert_der).public_key() != key.public_key():
        raise Unauthenticated("the issued certificate does not carry this joiner's key")
    members: list[memstore.MemberRow] = []
    signer_address = ""
    for signed in resp.members:
        try:
            rec = verify_record(signed, ca.cert, mesh=mesh)
        except Exception:
            continue
        if rec.name == resp.signed_by:
            signer_address = rec.address
        members.append(
            memstore.MemberRow(
                rec.name,
                rec.address,
                rec.admission_address,
                rec.incarnation,
                MemberStatus.ALIVE,
                signed.SerializeToString(),
            )
        )
    # Everything checked: now, and only now, write the home.
    created = not home.root.exists()
    try:
        prepare_home(home)
        store = write_identity(home, cfg, key_to_pem(key), resp.cert_der, ca, keep_ca_key=False)
        memstore.upsert_members(store, members)
        if resp.signed_by and signer_address:
            idstore.add_ca_holder(store, resp.signed_by, signer_address)
        store.close()
    except BaseException:
        if created:
            shutil.rmtree(home.root, ignore_errors=True)
        raise
    return JoinResult(cfg, mesh, resp.signed_by, [m.name for m in members])


async def _call(
    stub: membership_pb2_grpc.MembershipStub, req: membership_pb2.JoinRequest, target: str
) -> membership_pb2.JoinResponse:
    """One Join call; a rate-limited one is retried after the seed's hint (bounded)."""
    deadline = time.monotonic() + RATE_LIMIT_PATIENCE_S
    while True:
        try:
            resp: membership_pb2.JoinResponse = await stub.Join(req, timeout=JOIN_TIMEOUT_S)
            return resp
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            if isinstance(err, Unavailable):
                raise Unavailable(
                    f"cannot reach the seed's admission listener at {target}"
                ) from None
            hint = _RETRY_RE.search(str(err)) if isinstance(err, ResourceExhausted) else None
            if hint is None or time.monotonic() + float(hint[1]) > deadline:
                raise err from None
            await asyncio.sleep(float(hint[1]) * random.uniform(1.0, 1.5))
