"""The worker's outbound clients (worker/outbound.py) against real local servers: a name is
resolved once and checked, the connection goes to a checked address, and the Host header, TLS
SNI and certificate verification stay the name's."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.receiver import Receiver
from worker import outbound


async def test_a_name_is_connected_to_at_a_checked_address_with_the_names_host_header(
    receiver: Receiver,
) -> None:
    url = f"http://localhost:{receiver.port}/hooks"
    checked = await outbound.checked_addresses("localhost", receiver.port, allow_private=True)

    async with (
        outbound.client(allow_private=True) as http,
        http.stream("POST", url, content=b"{}") as response,
    ):
        peer = response.extensions["network_stream"].get_extra_info("server_addr")
        assert response.status_code == 200

    # The socket went to an address the policy saw (the receiver listens on 127.0.0.1 only),
    # while the request still names the host it was given.
    assert peer == ("127.0.0.1", receiver.port)
    assert "127.0.0.1" in checked
    (request,) = receiver.requests
    assert request.headers["host"] == f"localhost:{receiver.port}"


async def test_under_the_default_policy_loopback_is_refused_at_the_connection(
    receiver: Receiver,
) -> None:
    async with outbound.client(allow_private=False) as http:
        with pytest.raises(outbound.AddressRefused) as by_name:
            await http.post(f"http://localhost:{receiver.port}/hooks", content=b"{}")
        with pytest.raises(outbound.AddressRefused) as by_literal:
            await http.post(f"http://[::ffff:127.0.0.1]:{receiver.port}/hooks", content=b"{}")

    assert str(by_name.value).startswith("localhost resolves to a private or loopback address (")
    assert str(by_literal.value) == "::ffff:127.0.0.1 is a private or loopback address"
    assert isinstance(by_name.value, httpx.ConnectError)  # callers handle it as one
    assert receiver.requests == []


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for the DNS name `name`."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class TlsReceiver:
    server: Receiver
    ca: ssl.SSLContext  # trusts the server's self-signed certificate
    sni_names: list[str | None]


@pytest.fixture
def tls_receiver(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TlsReceiver]:
    """An https receiver whose certificate is for `request.param`; it records the SNI names."""
    cert, key = _certificate(tmp_path, request.param)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []

    def record(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = record  # type: ignore[assignment]
    server = Receiver(tls=context).start()
    yield TlsReceiver(server, ssl.create_default_context(cafile=str(cert)), names)
    server.stop()


@pytest.mark.parametrize("tls_receiver", ["localhost"], indirect=True)
async def test_tls_sends_the_names_sni_and_verifies_the_certificate_for_the_name(
    tls_receiver: TlsReceiver,
) -> None:
    url = f"https://localhost:{tls_receiver.server.port}/hooks"
    async with outbound.client(allow_private=True, verify=tls_receiver.ca) as http:
        response = await http.post(url, content=b"{}")

    assert response.status_code == 200
    assert tls_receiver.sni_names == ["localhost"]
    (request,) = tls_receiver.server.requests
    assert request.headers["host"] == f"localhost:{tls_receiver.server.port}"


@pytest.mark.parametrize("tls_receiver", ["elsewhere.example"], indirect=True)
async def test_a_certificate_for_another_name_is_refused(tls_receiver: TlsReceiver) -> None:
    url = f"https://localhost:{tls_receiver.server.port}/hooks"
    async with outbound.client(allow_private=True, verify=tls_receiver.ca) as http:
        with pytest.raises(httpx.ConnectError) as refused:
            await http.post(url, content=b"{}")

    assert "certificate verify failed" in str(refused.value)
    assert "localhost" in str(refused.value)  # checked against the name, not 127.0.0.1
    assert tls_receiver.server.requests == []
