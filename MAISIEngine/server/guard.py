"""What keeps web pages and slow clients from driving or holding the job server.

- `HostOriginGuard`: requests must name an allowed Host (a server without a token answers only to
  loopback names, which defeats DNS rebinding), and requests a browser sends for another site (an
  `Origin` not on the list, or `Sec-Fetch-Site: cross-site`) are refused, so a web page cannot post a
  form to it. Native clients (Slicer, the desktop app, requests) send neither header.
- `HeaderTimeoutH11`: a connection that has not sent its request headers within a few seconds is
  closed (uvicorn's own keep-alive timeout covers idle connections only after a first response).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from uvicorn.protocols.http.h11_impl import H11Protocol

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
HEADER_TIMEOUT_S = 10.0


def host_name(host_header: str) -> str:
    """The host of a Host header, without its port (IPv6 in brackets kept whole)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostOriginGuard:
    """Pure ASGI middleware (does not buffer bodies or break event streams)."""

    def __init__(self, app, allowed_hosts: Iterable[str] | None, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self.problem(headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": {"message": problem, "hint": "connect with a MAISI client to an allowed address"}})
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body.encode()})

    def problem(self, headers: dict[str, str]) -> str | None:
        host = host_name(headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            return f"host {host or '(none)'!r} is not served here"
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.allowed_origins:
            return "requests from web pages are refused"
        if headers.get("sec-fetch-site", "none") not in ("none", "same-origin") and not self.allowed_origins:
            return "requests from web pages are refused"
        return None


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose first request headers do not arrive in time."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)
