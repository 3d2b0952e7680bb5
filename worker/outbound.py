"""The worker's outbound HTTP clients (webhooks and providers): every connection resolves the
host name once, checks every address it got against web.domain.addresses, and connects to those
checked addresses only, so a DNS answer that changes between the check and the connect (DNS
rebinding) cannot reach a private address. The URL, the Host header, TLS SNI and certificate
verification all stay the name's: only the TCP connect is pinned.

Imports web.domain and httpx/httpcore only; the policy itself lives in web.domain.addresses.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from web.domain import addresses


class AddressRefused(httpx.ConnectError):
    """The host resolves to an address the policy refuses; nothing was sent. A ConnectError, so
    every caller that handles "could not connect" handles this too."""


async def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses `host` resolves to now, each allowed by the policy, in the resolver's
    order. AddressRefused when any is not (one bad answer refuses the name), ConnectError
    when the name does not resolve."""
    try:
        answers = await asyncio.get_running_loop().getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise httpx.ConnectError(f"DNS lookup of {host} failed: {exc}") from None
    found = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in answers))
    if not allow_private:
        for address in found:
            if not addresses.is_public_address(address):
                if addresses.literal_address(host) is not None:
                    raise AddressRefused(f"{host} is a private or loopback address")
                raise AddressRefused(
                    f"{host} resolves to a private or loopback address ({address})"
                )
    return found


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, except that a name is resolved (and checked) here and the
    socket connects to the checked address itself, which needs no second lookup."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        found = await checked_addresses(host, port, allow_private=self._allow_private)
        failure: Exception | None = None
        for address in found:  # all checked: try them in order, as a resolver-driven connect would
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} has no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not used for outbound calls")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a connection pool whose connections go through
    _PinnedBackend. Proxies from the environment are not used (a proxy would resolve the name
    itself, out of the policy's sight)."""

    def __init__(
        self, *, allow_private: bool, verify: ssl.SSLContext | bool = True, limits: httpx.Limits
    ) -> None:
        super().__init__(verify=verify, limits=limits)
        # httpx has no setting for httpcore's network backend: the pool is built again with it
        # (tests/worker/test_outbound.py checks that connections go through it).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(allow_private),
        )


def client(
    *,
    allow_private: bool,
    timeout: float = 10.0,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncClient:
    """An httpx client whose every connection is checked and pinned (see the module doc);
    `allow_private` lets it reach private and loopback addresses (local development)."""
    limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return httpx.AsyncClient(
        transport=PinnedTransport(allow_private=allow_private, verify=verify, limits=limits),
        timeout=httpx.Timeout(timeout),
        trust_env=False,
    )
