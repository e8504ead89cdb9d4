"""The web view's token guard, driven through its ASGI interface."""

from __future__ import annotations

from typing import Any

import pytest

from zambeze_mesh.ui.auth import TokenGuard, new_token

TOKEN = "t" * 32


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def call(
    method: str, path: str = "/", query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    guard = TokenGuard(_app, TOKEN)
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await guard(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


async def test_get_needs_the_token_anywhere() -> None:
    assert (await call("GET"))[0] == 403
    assert (await call("GET", query="token=wrong"))[0] == 403
    status, headers = await call("GET", query=f"token={TOKEN}")
    assert status == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    name_value = cookie.split(";")[0]
    assert (await call("GET", headers={"Cookie": name_value}))[0] == 200
    assert (await call("GET", headers={"X-Zmesh-Token": TOKEN}))[0] == 200
    assert (await call("GET", headers={"Cookie": "zmesh_ui_x=" + TOKEN}))[0] == 403


async def test_post_needs_the_header_and_same_origin() -> None:
    host = {"Host": "127.0.0.1:8000"}
    assert (await call("POST", query=f"token={TOKEN}", headers=host))[0] == 403
    _, headers = await call("GET", query=f"token={TOKEN}")
    cookie = headers["set-cookie"].split(";")[0]
    assert (await call("POST", headers={**host, "Cookie": cookie}))[0] == 403
    ok = {**host, "X-Zmesh-Token": TOKEN}
    assert (await call("POST", headers=ok))[0] == 200
    assert (await call("POST", headers={**ok, "Origin": "http://127.0.0.1:8000"}))[0] == 200
    assert (await call("POST", headers={**ok, "Origin": "http://127.0.0.1:9999"}))[0] == 403
    assert (await call("OPTIONS", headers={**host, "Origin": "http://evil"}))[0] == 403


def test_tokens_are_random_and_long() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 32
    with pytest.raises(ValueError):
        TokenGuard(_app, "short")
