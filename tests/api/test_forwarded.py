"""The client address behind a trusted proxy (issue 12, item 8): only a valid IP address from
X-Forwarded-For is taken, else the peer's, under both servers of `flowgate serve`."""

from __future__ import annotations

import httpx
import pytest
from arq.connections import ArqRedis

from tests.factories import auth, create_key
from tests.live_server import LiveServer
from web.cli import SERVERS
from web.forwarded import TrustedProxies
from web.settings import SettingsError, get_settings

STATUS_URL = "/api/v1/public/executions/00000000-0000-0000-0000-000000000000/status"

# What a client may put in X-Forwarded-For through a proxy that passes it on: none of these is
# an IP address, so none may become a client address (and a failed-auth counter) of its own.
GARBAGE: list[str | bytes] = [
    "client-1",
    "unknown",
    "10.0.0.1:8080",
    "[2001:db8::1]",
    "fe80::1%eth0",
    "fe80::1%1",
    "999.0.0.1",
    "10.0.0.01",
    "<script>alert(1)</script>",
    "",
    ", ,",
    "10.0.0.1 10.0.0.2",
    "0x7f.1",
    "localhost",
    b"\xe9t\xe9",
    "a" * 4000,
    "2001:db8::1/64",
    "_",
    "10.0.0.1;10.0.0.2",
    "-1",
    "client-21",
]


@pytest.mark.parametrize("server_name", SERVERS)
async def test_forwarded_values_that_are_not_ip_addresses_do_not_escape_the_throttle(
    redis: ArqRedis, server_name: str
) -> None:
    secret = (await create_key(rate_limit_burst=100, rate_limit_refill_per_second=1.0)).secret
    server = LiveServer(server_name, FLOWGATE_AUTH_FAILURES_PER_MINUTE="20").start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            guesses = [
                await http.get(
                    STATUS_URL, headers={**auth(f"{i:064x}"), "X-Forwarded-For": garbage}
                )
                for i, garbage in enumerate(GARBAGE)
            ]
            # All 21 counted against the proxy's own address (127.0.0.1), the peer ...
            counters = sorted(key.decode() for key in await redis.keys("flowgate:authfail:*"))
            blocked = await http.get(
                STATUS_URL, headers={**auth(secret), "X-Forwarded-For": "made-up"}
            )
            # ... while a valid forwarded address is still its own client.
            customer = await http.get(
                STATUS_URL, headers={**auth(secret), "X-Forwarded-For": "10.0.0.2"}
            )
    finally:
        server.stop()

    assert [r.status_code for r in guesses] == [401] * 20 + [429]
    assert counters == ["flowgate:authfail:127.0.0.1"]
    assert blocked.status_code == 429
    assert blocked.json()["message"] == "Too many failed authentication attempts"
    assert customer.status_code == 404


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        (["203.0.113.7"], "203.0.113.7"),
        # The rightmost entry that is not a trusted proxy: what the nearest proxy saw.
        (["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
        (["198.51.100.1, 203.0.113.7, 10.1.2.3"], "203.0.113.7"),
        (["198.51.100.1", "203.0.113.7"], "203.0.113.7"),  # two headers are one list
        ([" 2001:DB8::1 "], "2001:db8::1"),  # one spelling per address: one counter
        (["::ffff:203.0.113.7"], "203.0.113.7"),
        (["10.1.2.3, 10.1.2.4"], "10.1.2.3"),  # every hop trusted: the leftmost
        # Not an IP address where the client's should be: the peer's stays.
        (["made-up"], None),
        (["203.0.113.7, made-up"], None),
        (["203.0.113.7:443"], None),
        (["fe80::1%eth0"], None),
        (["made-up, 10.1.2.3"], None),
        ([""], None),
    ],
)
def test_the_client_is_the_last_untrusted_hop_and_only_an_ip_address(
    forwarded_for: list[str], client: str | None
) -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.client_of(forwarded_for) == client


def test_only_listed_peers_are_trusted() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.is_trusted("127.0.0.1")
    assert proxies.is_trusted("10.200.0.1")
    assert proxies.is_trusted("::ffff:10.200.0.1")
    assert not proxies.is_trusted("192.0.2.1")
    assert not proxies.is_trusted("testclient")
    assert TrustedProxies(["*"]).is_trusted("192.0.2.1")


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.0/33", "127.0.0.1,nope", "fe80::1%0"])
def test_a_bad_forwarded_allow_ips_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", value)
    try:
        with pytest.raises(SettingsError) as raised:
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert str(raised.value).startswith("FORWARDED_ALLOW_IPS: expected comma-separated IP")
    assert str(raised.value).endswith(f", got {value!r}")


def test_forwarded_allow_ips_defaults_to_this_host_only(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    try:
        assert get_settings().forwarded_allow_ips == ("127.0.0.1",)
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", " 10.0.0.0/8 , 192.0.2.1,* ")
        get_settings.cache_clear()
        assert get_settings().forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.1", "*")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
