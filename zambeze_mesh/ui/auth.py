"""Access token of the web view (as Jupyter does it).

Every request must carry the token: in the ``token`` query parameter (the URL the
server prints), in the ``X-Zmesh-Token`` header, or in the cookie the server sets
when the page is first opened with the token. Anything else gets 403.

State-changing requests (POST) must carry the token in the header: a page of
another origin can make the browser send the cookie with a form POST, but cannot
add a header without a CORS preflight, which this server never grants. POSTs whose
``Origin`` is not this server are refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

__all__ = ["HEADER", "TokenGuard", "new_token"]

HEADER = "x-zmesh-token"
_SAFE_METHODS = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_token() -> str:
    """A fresh random access token (URL-safe, 192 bits)."""
    return secrets.token_urlsafe(24)


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class TokenGuard:
    """ASGI middleware: 403 unless the request proves it knows the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the access token must be at least 16 characters")
        self.app = app
        self.token = token
        # One cookie per server (several may run on one host, cookies ignore ports).
        self.cookie = "zmesh_ui_" + hashlib.sha256(token.encode()).hexdigest()[:12]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        in_query = query.get("token", [None])[0]
        in_header = headers.get(HEADER)
        if method in _SAFE_METHODS:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers.get("cookie", ""))
            except Exception:  # a malformed Cookie header counts as no cookie
                jar = SimpleCookie()
            in_cookie = jar[self.cookie].value if self.cookie in jar else None
            ok = any(_same(v, self.token) for v in (in_query, in_header, in_cookie))
        else:
            origin = headers.get("origin")
            host = headers.get("host", "")
            same_origin = origin is None or origin in (f"http://{host}", f"https://{host}")
            ok = same_origin and _same(in_header, self.token)
        if not ok:
            await _forbidden(send)
            return
        if in_query is not None and method in _SAFE_METHODS:
            await self.app(scope, receive, self._with_cookie(send))
        else:
            await self.app(scope, receive, send)

    def _with_cookie(self, send: Send) -> Send:
        value = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", value)]
            await send(message)

        return wrapped


async def _forbidden(send: Send) -> None:
    body = b"403 Forbidden: open the URL printed by `zmesh ui` (it carries the access token)\n"
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
