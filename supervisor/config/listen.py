"""Listen addresses and the Host-header allowlist (pure; no web framework needed to import this).

Policy: the dashboard listens on loopback unless told otherwise. A request's ``Host`` header must name the
listen address, ``localhost``, ``127.0.0.1``, ``::1`` or a name from ``[Web] AllowedHosts``; anything else is
refused (a page on another site that rebinds its DNS name to 127.0.0.1 sends its own name as Host).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_LISTEN = "127.0.0.1:8765"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class ListenError(ValueError):
    """A listen address that cannot be used; the message says why."""


@dataclass(frozen=True)
class Listen:
    """Where the web server binds."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    @property
    def url_host(self) -> str:
        """The host as written in a URL (IPv6 in brackets; the wildcard replaced by a reachable name)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    def url(self, path: str = "/") -> str:
        return f"http://{self.url_host}:{self.port}{path}"


def parse_listen(text: str) -> Listen:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (loopback); port 0 = any free port.

    Raises ListenError naming what is wrong."""
    text = text.strip()
    if not text:
        raise ListenError("empty (use HOST:PORT, e.g. 127.0.0.1:8765)")
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ListenError("an IPv6 address is written [ADDRESS]:PORT")
        host, port_text = text[1:close], text[close + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ListenError("not HOST:PORT (e.g. 127.0.0.1:8765)")
        if ":" in host:
            raise ListenError("an IPv6 address is written [ADDRESS]:PORT")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        # Port 0 asks the kernel for a free port (the printed URL names the one it gave).
        raise ListenError(f"port {port_text!r} is not a number from 0 to 65535")
    return Listen(host=host, port=int(port_text))


def host_of(header: str) -> str:
    """The host part of a Host header, lower-case, without port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def allowed_hosts(listen: Listen, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Every host name a request may carry in its Host header."""
    names = {*LOOPBACK_NAMES, listen.host.lower(), *(host_of(h) for h in extra if h.strip())}
    return frozenset(names)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    return header is not None and host_of(header) in allowed
