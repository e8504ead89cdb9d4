"""Admission of new agents (server side of ``Membership.Join``).

Two calls. The first carries only the CA digest from the token and returns the CA
certificate, so the joiner can pin it before it proves anything. The second carries a
CSR and an HMAC proof keyed by the token secret (the secret never travels). Tokens are
created on the CA holder, and only the CA holder admits: it checks the joiner's proof
against its own tokens on every join, also when another agent forwarded the request
over mTLS (the forwarder passes the proof through unchanged and vouches for nothing).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import grpc

from zambeze_mesh.agent import approval
from zambeze_mesh.agent.bootstrap import hosts_for
from zambeze_mesh.agent.ratelimit import RateLimiter, source_of
from zambeze_mesh.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidInput,
    NotPermitted,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.membership.status import LIVE, MemberStatus
from zambeze_mesh.security import tokens as tokmod
from zambeze_mesh.security.authz import Caller
from zambeze_mesh.security.identity import Identity, validate_name
from zambeze_mesh.settings.config import split_hostport
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.store import identity as idstore
from zambeze_mesh.store import members as memstore
from zambeze_mesh.store import names as namestore
from zambeze_mesh.store import tokens as tokstore
from zambeze_mesh.store.names import csr_key_digest, key_digest_of_cert
from zambeze_mesh.v1 import common_pb2, membership_pb2, membership_pb2_grpc

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent

log = logging.getLogger("zambeze_mesh.admission")

#: Seconds between two ``join.rate_limited`` log lines about one source address.
RATE_LOG_EVERY_S = 10.0
MAX_CSR_BYTES = 4096
MAX_HOPS = 3
FORWARD_TIMEOUT_S = 10.0


def _validate(req: membership_pb2.JoinRequest) -> None:
    validate_name(req.name, "agent name")
    if not req.csr_der or len(req.csr_der) > MAX_CSR_BYTES:
        raise InvalidInput(f"join request needs a CSR of at most {MAX_CSR_BYTES} bytes")
    if len(req.proof) != 32:
        raise InvalidInput("join request needs a 32-byte proof")
    for addr in (req.advertise, req.admission_advertise):
        if addr:
            split_hostport(addr)
    if not req.advertise:
        raise InvalidInput("join request needs the joiner's advertised address")
    tokmod.validate_token_id(req.token_id)
    if req.hops > MAX_HOPS:
        raise InvalidInput("join request was forwarded too many times")


class Admission:
    """Answers join requests for one agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        cfg = agent.config
        self._limiter = RateLimiter(cfg.join_rate_per_s, cfg.join_burst)
        self._limited_logged: dict[str, float] = {}

    def _rate_limit(self, caller: Caller, peer: str) -> None:
        """Anonymous callers get ``join_burst`` calls, then ``join_rate_per_s``, per address."""
        if caller.kind != "anonymous":
            return
        source = source_of(peer)
        wait = self._limiter.take(source)
        if wait <= 0:
            return
        now = time.monotonic()
        if now - self._limited_logged.get(source, -RATE_LOG_EVERY_S) >= RATE_LOG_EVERY_S:
            if len(self._limited_logged) > 4096:
                self._limited_logged.clear()
            self._limited_logged[source] = now
            log_event(log, "join.rate_limited", level=logging.WARNING, source=source)
        raise ResourceExhausted(
            f"too many join requests from {source}: retry in {max(wait, 0.1):.1f} s"
        )

    async def join(
        self, req: membership_pb2.JoinRequest, caller: Caller, peer: str = ""
    ) -> membership_pb2.JoinResponse:
        """Handle one Join call (pinning call or admission call)."""
        ca = self.agent.ca
        assert ca is not None
        self._rate_limit(caller, peer)
        if req.ca_digest != ca.digest:
            # Nothing about this mesh (not even its name) for a caller without the pin.
            raise Unauthenticated("this agent does not admit into the mesh of that join token")
        if not req.csr_der:
            log_event(log, "join.pin", name=req.name[:64])
            return membership_pb2.JoinResponse(ca_cert_der=ca.cert_der, mesh=self.agent.mesh)
        _validate(req)
        forwarded = req.hops > 0
        if forwarded and (caller.identity is None or not caller.identity.is_agent):
            raise NotPermitted("only agents may forward join requests")
        # Only the CA holder admits, and it checks the joiner's own proof on every join,
        # forwarded or not: a forwarder passes the proof through unchanged and its word
        # (the legacy ``vouched`` flag) grants nothing.
        if self.agent.ca_locked:
            raise FailedPrecondition(
                "the CA key is locked: the operator must restart this agent with"
                " --ca-passphrase-file"
            )
        if ca.can_sign:
            self._check_token(req)
            # pilot tokens: single use, scoped to <agent>-pilot-* names
            from zambeze_mesh.pilots.tokens import check_scope

            check_scope(self.agent.require_store(), req.token_id, req.name)
            key_digest = csr_key_digest(req.csr_der)
            self._check_name_free(req.name, key_digest)
            self._check_approved(req, key_digest)
            cert_der = ca.sign_csr(
                req.csr_der,
                Identity.agent(self.agent.mesh, req.name),
                hosts_for(req.advertise, *(a for a in [req.admission_advertise] if a)),
            )
            signer = self.agent.name
            store = self.agent.require_store()
            namestore.record_issue(store, req.name, cert_der)
            tokstore.count_use(store, req.token_id)
        else:
            self._check_name_free(req.name, csr_key_digest(req.csr_der))
            resp = await self._forward(req)
            cert_der, signer = resp.cert_der, resp.signed_by
        await self._record_member(req)
        log_event(
            log,
            "join.accepted",
            name=req.name,
            address=req.advertise,
            signed_by=signer,
            forwarded=forwarded,
        )
        return membership_pb2.JoinResponse(
            ca_cert_der=ca.cert_der,
            cert_der=cert_der,
            mesh=self.agent.mesh,
            members=self._member_records(),
            signed_by=signer,
        )

    def _check_token(self, req: membership_pb2.JoinRequest) -> None:
        row = tokstore.get_token(self.agent.require_store(), req.token_id)
        if row is None:
            log_event(log, "join.refused", level=logging.WARNING, reason="unknown token")
            raise Unauthenticated("unknown join token (create one with `zmesh token create`)")
        try:
            tokmod.verify_join_proof(
                tokstore.token_record(row),
                req.proof,
                tokmod.JoinFields.from_request(req),
                int(time.time() * 1000),
            )
            limit = tokstore.max_uses(self.agent.require_store(), row.token_id)
            if limit and row.uses >= limit:
                raise Unauthenticated(
                    f"join token {row.token_id} was used up ({row.uses} of {limit} uses)"
                )
        except Unauthenticated as exc:
            log_event(log, "join.refused", level=logging.WARNING, reason=str(exc))
            raise

    def _check_approved(self, req: membership_pb2.JoinRequest, key_digest: str) -> None:
        """With ``join_approval``, only a key the operator approved gets a certificate."""
        if not self.agent.config.join_approval:
            return
        store = self.agent.require_store()
        if approval.check_approved(store, req.name, req.advertise, key_digest):
            approval.collected(store, req.name)
            return
        log_event(log, "join.pending", name=req.name, address=req.advertise)
        raise FailedPrecondition(
            f"the join of {req.name!r} {approval.APPROVAL_MARK}: on the CA holder "
            f"{self.agent.name}, run `zmesh members approve {req.name}`"
        )

    def _check_name_free(self, name: str, key_digest: str) -> None:
        """A name stays bound to its key until it is retired or its holder LEFT.

        Refused: the admitting agent's own name; a name the CA holder issued to another
        key and never retired, unless its holder left; a name that any known record
        (alive, suspect or dead) binds to another key.
        """
        if name == self.agent.name:
            raise AlreadyExists(f"agent name {name!r} is taken by the admitting agent")
        status = ""
        gossip = self.agent.gossip
        for m in gossip.members() if gossip is not None else []:
            if m.name != name:
                continue
            status = m.status
            if m.status != MemberStatus.LEFT and m.signed is not None:
                if key_digest_of_cert(m.signed.cert_der) != key_digest:
                    raise AlreadyExists(
                        f"agent name {name!r} belongs to another key ({m.status}); the "
                        f"operator can retire it with `zmesh members remove {name}`"
                    )
            elif m.status in LIVE:
                raise AlreadyExists(f"an agent named {name!r} is already an active member")
        store = self.agent.require_store()
        if not status:  # no longer in the view: its last persisted status
            status = next((r.status for r in memstore.load_members(store) if r.name == name), "")
        issued = namestore.get_issued(store, name)
        if (
            issued is not None
            and not issued.retired
            and issued.key_sha256 != key_digest
            and status != MemberStatus.LEFT
        ):
            raise AlreadyExists(
                f"agent name {name!r} was issued to another key and not retired "
                f"(`zmesh members remove {name}` on the CA holder retires it)"
            )

    async def _forward(self, req: membership_pb2.JoinRequest) -> membership_pb2.JoinResponse:
        store = self.agent.require_store()
        holders = idstore.ca_holders(store)
        if not holders:
            raise Unavailable("this agent cannot sign certificates and knows no agent that can")
        channels = self.agent.channels
        assert channels is not None
        fwd = membership_pb2.JoinRequest()
        fwd.CopyFrom(req)
        fwd.hops = req.hops + 1
        fwd.vouched = False
        last: Exception | None = None
        for name, address in holders:
            stub = membership_pb2_grpc.MembershipStub(channels.get(address))
            try:
                resp: membership_pb2.JoinResponse = await stub.Join(fwd, timeout=FORWARD_TIMEOUT_S)
                return resp
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                if not isinstance(err, Unavailable):
                    raise err from None
                last = err
                log_event(log, "join.forward_failed", level=logging.WARNING, to=name)
        raise Unavailable(f"no CA holder reachable to sign the certificate: {last}")

    async def _record_member(self, req: membership_pb2.JoinRequest) -> None:
        gossip = self.agent.gossip
        if gossip is not None:
            await gossip.introduce(req.name, req.advertise)

    def _member_records(self) -> list[common_pb2.SignedRecord]:
        gossip = self.agent.gossip
        if gossip is None:
            return []
        return gossip.signed_records()
