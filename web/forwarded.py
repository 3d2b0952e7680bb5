"""The client's address behind a trusted proxy: X-Forwarded-For and X-Forwarded-Proto applied
to the ASGI scope, the same way under both servers of `flowgate serve` (their own handling is
switched off). Imports nothing of flowgate: the trusted proxies come from web.settings.

The client is the rightmost X-Forwarded-For entry that is not a trusted proxy (each proxy
appends the address it was called from, so that entry was written by the nearest proxy we
trust). Only an IP address is taken: when that entry, or a trusted one on the way to it, is
anything else, the peer's address stays. Anything else would let a client choose its own
"address" (one failed-auth counter per made-up value) by sending garbage through the proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ASGIApp = Any
SCHEMES = {"http": ("http", "ws"), "https": ("https", "wss")}


def parse_ip(text: str) -> IPAddress | None:
    """A plain IPv4 or IPv6 address, IPv4-mapped IPv6 as IPv4; None for anything else (names,
    ports, IPv6 zone ids: a zone id is free text, so it would make one address many)."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def parse_trusted(entry: str) -> IPNetwork:
    """One FORWARDED_ALLOW_IPS entry: an address or a network (`10.0.0.0/8`); ValueError else."""
    if "/" in entry:
        return ipaddress.ip_network(entry.strip(), strict=False)
    address = parse_ip(entry)
    if address is None:
        raise ValueError(entry)
    return ipaddress.ip_network(address)


class TrustedProxies:
    def __init__(self, entries: Iterable[str]) -> None:
        entries = [e.strip() for e in entries if e.strip()]
        self.everyone = "*" in entries
        self.networks = [parse_trusted(e) for e in entries if e != "*"]

    def __contains__(self, address: IPAddress) -> bool:
        return self.everyone or any(address in network for network in self.networks)

    def is_trusted(self, peer: str) -> bool:
        address = parse_ip(peer)
        return address is not None and address in self

    def client_of(self, forwarded_for: list[str]) -> str | None:
        """The client's address from a trusted proxy's X-Forwarded-For values; None when it is
        not a valid IP address (the peer's address stays)."""
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        address: IPAddress | None = None
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                return None
            if address not in self:
                break
        # Every hop trusted: the leftmost is the client.
        return str(address) if address is not None else None


def with_proxy_headers(app: ASGIApp, trusted: TrustedProxies) -> ASGIApp:
    """`app` with the client address and scheme taken from a trusted proxy's headers."""

    async def proxied(scope: dict[str, Any], receive: Any, send: Any) -> None:
        client = scope.get("client") if scope["type"] in ("http", "websocket") else None
        if client and trusted.is_trusted(client[0]):
            forwarded_for: list[str] = []
            proto = None
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    forwarded_for.append(value.decode("latin-1"))
                elif name == b"x-forwarded-proto" and proto is None:
                    proto = value.decode("latin-1").strip().lower()
            forwarded = trusted.client_of(forwarded_for) if forwarded_for else None
            if forwarded is not None:
                scope = {**scope, "client": (forwarded, 0)}
            if proto in SCHEMES:
                http, ws = SCHEMES[proto]
                scope = {**scope, "scheme": http if scope["type"] == "http" else ws}
        await app(scope, receive, send)

    return proxied
