"""The gate in front of every route: Host allowlist, authentication, security headers (ASGI middleware).

Order of refusals: a foreign Host header is 400 before anything else (DNS rebinding: the page that sent it
must learn nothing, not even whether a login exists). Then authentication: ``Authorization: Bearer TOKEN``
(scripts) or the session cookie (browsers); without either, ``/api/*`` and ``/metrics`` answer 401 and pages
redirect to ``/login``. ``[Web] MetricsToken``, when set, is a second bearer token good for ``/metrics`` only
(a Prometheus server's scrape secret, which must not be able to act on tasks). ``/login`` and ``/static/*``
(the vendored htmx and the stylesheet, no data) are open.
CSRF is checked by the POST endpoints themselves (they read the form), through :func:`csrf_ok`.

Every response carries a strict Content-Security-Policy (scripts, styles and connections from this origin
only; no inline script or style; no framing), ``nosniff``, ``no-referrer`` (the login URL holds the token),
and ``no-store``.
"""

from __future__ import annotations

import json
from typing import Any, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config.listen import host_allowed
from .auth import COOKIE_NAME, csrf_valid, session_valid, token_matches

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")
METRICS_PATH = "/metrics"
FORM_LIMIT = 64 * 1024


class Guard:
    """ASGI middleware; sets ``scope["state"]["auth"]`` to ``"bearer"`` or ``"cookie"`` and the session."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        allowed: frozenset[str],
        now: Callable[[], float],
        metrics_token: str | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.metrics_token = metrics_token
        self.allowed = allowed
        self.now = now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in SECURITY_HEADERS if k not in names),
                ]
            await send(message)

        request = Request(scope)
        if not host_allowed(request.headers.get("host"), self.allowed):
            await _plain(
                send_secured,
                400,
                "bad Host header: this dashboard answers only to its own address "
                "(add the name to [Web] AllowedHosts in taskautomation.ini)",
            )
            return
        path: str = scope["path"]
        state = scope.setdefault("state", {})
        if not path.startswith(OPEN_PATHS):
            auth = self._authenticate(request, path)
            if auth is None:
                if path.startswith("/api/") or path == METRICS_PATH:
                    await _json(
                        send_secured,
                        401,
                        {
                            "ok": False,
                            "error": "authentication required: Authorization: Bearer TOKEN (logs/state/web-token)",
                        },
                    )
                else:
                    await _redirect(send_secured, "/login")
                return
            state["auth"], state["session"] = auth
        await self.app(scope, receive, send_secured)

    def _authenticate(self, request: Request, path: str) -> tuple[str, str] | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            if token_matches(self.token, header[7:]):
                return "bearer", ""
            if path == METRICS_PATH and self.metrics_token and token_matches(self.metrics_token, header[7:]):
                return "metrics", ""
            return None
        cookie = request.cookies.get(COOKIE_NAME)
        if session_valid(self.token, cookie, now=self.now()):
            assert cookie is not None
            return "cookie", cookie
        return None


async def csrf_ok(request: Request, token: str) -> bool:
    """A POST made with the session cookie must carry the session's CSRF token (header or form field).

    A bearer request needs none: a browser never adds that header on its own, so another site cannot forge it.
    """
    if request.state.auth == "bearer":
        return True
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        # The dashboard's own forms are urlencoded (small, read whole; no multipart parser needed).
        body = await request.body()
        values = parse_qs(body[:FORM_LIMIT].decode("utf-8", "replace")).get("csrf")
        given = values[0] if values else None
    return csrf_valid(token, request.state.session, given)


async def _plain(send: Send, status: int, text: str) -> None:
    await _respond(send, status, text.encode(), b"text/plain; charset=utf-8")


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    await _respond(send, status, json.dumps(body).encode(), b"application/json")


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
