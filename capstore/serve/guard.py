"""Who may read: the access token, the Host header, and headers that keep pages in their own origin.

With a token (``--token`` or ``CAPSTORE_SERVE_TOKEN``) every request must carry it: as
``?token=…`` (the URL ``capstore serve`` prints; the answer then sets a cookie so that links and
images work without it), the cookie, or ``Authorization: Bearer …``. Bound to a loopback address,
the server answers only requests whose ``Host`` is a loopback name, so a web page elsewhere cannot
reach it by pointing its own domain name at 127.0.0.1 (DNS rebinding). Every answer says not to be
framed, not to be sniffed, and not to send the URL (with a token in it) onwards.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capstore.serve.server import is_loopback

COOKIE = "capstore_token"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
]

Denied = Callable[[Scope, Receive, Send, int, str], Awaitable[None]]


class Guard:
    """ASGI middleware: the token check, the Host check and the security headers."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool, denied: Denied) -> None:
        self.app, self.token, self.loopback_only, self.denied = app, token or None, loopback_only, denied

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.loopback_only and not is_loopback(_host_name(headers.get("host", ""))):
            await self.denied(scope, receive, _secured(send), 400,
                              "this server answers only requests addressed to localhost")
            return
        set_cookie = False
        if self.token is not None:
            from_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[-1]
            given = [from_query, _bearer(headers.get("authorization", "")), _cookie(headers.get("cookie", ""))]
            if not any(g is not None and hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
                await self.denied(scope, receive, _secured(send), 401,
                                  "this server needs its access token: open the URL `capstore serve` printed "
                                  "(…?token=…), or send Authorization: Bearer TOKEN")
                return
            set_cookie = from_query is not None
        await self.app(scope, receive, _secured(send, self.token if set_cookie else None))


def _secured(send: Send, cookie_token: str | None = None) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", [])) + SECURITY_HEADERS
            if cookie_token is not None:
                headers.append((b"set-cookie", f"{COOKIE}={cookie_token}; Path=/; HttpOnly; SameSite=Strict"
                                .encode("latin-1")))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _bearer(value: str) -> str | None:
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _cookie(value: str) -> str | None:
    if not value:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(value)
    except Exception:  # a malformed Cookie header is no token
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None
