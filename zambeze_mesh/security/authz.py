"""Per-RPC authorization: who may call which service.

:func:`authorize` is the policy as a pure function; :class:`AuthorizationInterceptor`
applies it on a ``grpc.aio`` server. The interceptor cannot see the call's context, so
it wraps the handler's behaviour: the check runs first, with the real context, and
aborts with the right status. The verified :class:`Caller` is then available to the
servicer through :func:`current_caller`.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from cryptography import x509

from zambeze_mesh.errors import InvalidInput, NotPermitted, Unauthenticated, ZmeshError
from zambeze_mesh.grpc_status import grpc_code
from zambeze_mesh.security.certcache import CertCache, default_cache
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.security.tls import PeerContext, is_local_peer, peer_cert_pem

CallerKind = Literal["agent", "client", "local", "anonymous"]

PACKAGE = "zambeze_mesh.v1"
JOIN_METHOD = f"/{PACKAGE}.Membership/Join"
#: Revocations are CA-signed, so the CA holder's operator may hand them in locally.
REVOKE_METHOD = f"/{PACKAGE}.Membership/Revoke"
#: A CA holder mints pilot tokens for agents only, scoped to the caller's certificate name.
PILOT_TOKEN_METHOD = f"/{PACKAGE}.Membership/PilotToken"
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
AGENT_SERVICES = frozenset({f"{PACKAGE}.Membership", f"{PACKAGE}.Scheduling", f"{PACKAGE}.Data"})
CLIENT_SERVICES = frozenset({f"{PACKAGE}.Campaigns"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: an agent or client (by certificate), a local Unix-socket client,
    or an anonymous TCP peer without a certificate (the admission listener)."""

    kind: CallerKind
    identity: Identity | None = None

    @classmethod
    def agent(cls, identity: Identity) -> Caller:
        """A caller presenting an agent certificate of this mesh."""
        return cls("agent", identity)

    @classmethod
    def client(cls, identity: Identity) -> Caller:
        """A caller presenting a client certificate of this mesh."""
        return cls("client", identity)

    @classmethod
    def local(cls) -> Caller:
        """A caller on the agent's Unix socket."""
        return cls("local")

    @classmethod
    def anonymous(cls) -> Caller:
        """A caller without a certificate."""
        return cls("anonymous")

    @classmethod
    def from_identity(cls, identity: Identity) -> Caller:
        """An agent or client caller, by the identity's role."""
        return cls.agent(identity) if identity.role == "agent" else cls.client(identity)

    @property
    def name(self) -> str | None:
        """The caller's agent/client name, if it has an identity."""
        return self.identity.name if self.identity else None

    def describe(self) -> str:
        """Human-readable description for error messages and logs."""
        if self.identity is not None:
            return f"{self.kind} identity {self.identity.uri}"
        return "local client" if self.kind == "local" else "anonymous caller"


def _service_of(method: str) -> str:
    parts = method.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "" else ""


def authorize(method: str, caller: Caller) -> None:
    """Raise unless ``caller`` may call the fully-qualified gRPC ``method``.

    * ``Membership/Join``: anyone (the admission listener serves nothing else).
    * health and reflection: anyone but anonymous callers.
    * other ``Membership``, ``Scheduling``, ``Data``: agents only (``Membership/Revoke``
      also local callers: revocations are CA-signed; ``Membership/PilotToken`` strictly
      agents: the token is scoped to the caller's certificate name).
    * ``Campaigns``: clients, agents and local callers.
    * anything else: nobody.

    Anonymous callers of protected methods get Unauthenticated; authenticated callers of
    methods they may not use get NotPermitted.
    """
    if method == JOIN_METHOD:
        return
    if method.startswith(PUBLIC_PREFIXES):
        if caller.kind == "anonymous":  # the admission listener answers only Join
            raise Unauthenticated(f"{method} requires a certificate or the local socket")
        return
    if method == PILOT_TOKEN_METHOD and caller.kind != "agent":
        if caller.kind == "anonymous":
            raise Unauthenticated(f"{method} requires an agent certificate")
        raise NotPermitted(f"{caller.describe()} may not call {method} (agents only)")
    service = _service_of(method)
    if service in AGENT_SERVICES:
        if caller.kind == "agent" or (caller.kind == "local" and method == REVOKE_METHOD):
            return
        if caller.kind == "anonymous":
            raise Unauthenticated(f"{method} requires an agent certificate")
        raise NotPermitted(f"{caller.describe()} may not call {method} (agents only)")
    if service in CLIENT_SERVICES:
        if caller.kind == "anonymous":
            raise Unauthenticated(f"{method} requires a client certificate")
        return
    raise NotPermitted(f"unknown method {method!r}")


Policy = Callable[[str, Caller], None]

_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "zambeze_mesh_caller", default=None
)


def current_caller() -> Caller | None:
    """The authorized caller of the RPC being served (None outside an intercepted RPC)."""
    return _CALLER.get()


def require_caller() -> Caller:
    """:func:`current_caller`, raising Unauthenticated when there is none."""
    caller = _CALLER.get()
    if caller is None:
        raise Unauthenticated("no authenticated caller for this call")
    return caller


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Authorize every RPC of a ``grpc.aio`` server with :func:`authorize`.

    The caller is a local client for Unix-socket peers, the identity of a TLS peer
    certificate that chains to ``ca_cert`` and names ``mesh`` (anything else is
    UNAUTHENTICATED), or anonymous when the peer presented no certificate. A certificate
    for which ``revoked`` answers True is UNAUTHENTICATED for every RPC.
    """

    def __init__(
        self,
        mesh: str,
        ca_cert: x509.Certificate,
        *,
        policy: Policy = authorize,
        cache: CertCache | None = None,
        revoked: Callable[[x509.Certificate], bool] | None = None,
    ) -> None:
        self._revoked = revoked
        self._mesh = mesh
        self._ca_cert = ca_cert
        self._policy = policy
        self._cache = cache or default_cache

    def caller_of(self, context: PeerContext) -> Caller:
        """Identify the peer of ``context``; raise Unauthenticated for a foreign certificate."""
        if is_local_peer(context):
            return Caller.local()
        pem = peer_cert_pem(context)
        if pem is None:
            return Caller.anonymous()
        verified = self._cache.verify_pem(pem, self._ca_cert, mesh=self._mesh)
        if self._revoked is not None and self._revoked(verified.cert):
            raise Unauthenticated(f"the certificate of {verified.identity.uri} was revoked")
        return Caller.from_identity(verified.identity)

    async def _check(self, method: str, context: Any) -> Caller:
        try:
            caller = self.caller_of(context)
            self._policy(method, caller)
        except ZmeshError as exc:
            await context.abort(grpc_code(exc), str(exc))
            raise  # pragma: no cover - abort raises
        return caller

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the handler so that authorization runs first with the call's context."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        return _wrap_handler(handler, method, self._check)


Check = Callable[[str, Any], Awaitable[Caller]]


class _Malformed:
    """Stands for a request message that did not parse (answered INVALID_ARGUMENT)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Any) -> Any:
    """Wrap a request deserializer: bytes that do not parse become a :class:`_Malformed`.

    Without it gRPC answers UNKNOWN ("Unexpected DecodeError") for such requests.
    """
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Malformed(f"{type(exc).__name__}: {exc}")

    return deserialize


async def _refuse_malformed(request: Any, context: Any) -> None:
    if isinstance(request, _Malformed):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"malformed request message: {request.reason}"
        )


async def _checked_stream(requests: Any) -> AsyncIterator[Any]:
    async for item in requests:
        if isinstance(item, _Malformed):
            raise InvalidInput(f"malformed request message: {item.reason}")
        yield item


def _wrap_handler(handler: Any, method: str, check: Check) -> grpc.RpcMethodHandler:
    kwargs = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, method, check), **kwargs
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary(handler.stream_unary, method, check, streaming=True), **kwargs
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, method, check), **kwargs
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, method, check, streaming=True), **kwargs
        )
    return handler


def _reset(token: contextvars.Token[Caller | None]) -> None:
    # An async generator may be finalised in another context; the RPC's task ends anyway.
    with contextlib.suppress(ValueError):
        _CALLER.reset(token)


def _wrap_unary(behaviour: Any, method: str, check: Check, *, streaming: bool = False) -> Any:
    async def wrapped(request: Any, context: Any) -> Any:
        caller = await check(method, context)
        if streaming:
            request = _checked_stream(request)
        else:
            await _refuse_malformed(request, context)
        token = _CALLER.set(caller)
        try:
            result = behaviour(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            _reset(token)

    return wrapped


def _wrap_stream(behaviour: Any, method: str, check: Check, *, streaming: bool = False) -> Any:
    if inspect.isasyncgenfunction(behaviour):

        async def agen(request: Any, context: Any) -> AsyncIterator[Any]:
            caller = await check(method, context)
            if streaming:
                request = _checked_stream(request)
            else:
                await _refuse_malformed(request, context)
            token = _CALLER.set(caller)
            try:
                async for item in behaviour(request, context):
                    yield item
            finally:
                _reset(token)

        return agen

    async def writer(request: Any, context: Any) -> None:
        caller = await check(method, context)
        if streaming:
            request = _checked_stream(request)
        else:
            await _refuse_malformed(request, context)
        token = _CALLER.set(caller)
        try:
            result = behaviour(request, context)
            if inspect.isawaitable(result):
                await result
            elif hasattr(result, "__aiter__"):
                async for item in result:
                    await context.write(item)
            elif result is not None:
                for item in result:
                    await context.write(item)
        finally:
            _reset(token)

    return writer
