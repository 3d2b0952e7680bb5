"""Which network addresses flowgate may call out to: the SSRF policy that webhook URLs and
provider URLs (`base_url`, `url`) share, at the time they are set and again at every connection
(worker/outbound.py resolves a name once, checks every answer here, and connects to it).

Pure functions over the standard library; imports nothing of flowgate.
"""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

REFUSED = "must not point to a private or loopback address"

# IPv6 prefixes whose addresses carry an IPv4 address in their last 32 bits: IPv4-compatible
# (::a.b.c.d, deprecated), IPv4-translated (::ffff:0:a.b.c.d, RFC 2765) and the NAT64
# well-known prefix (64:ff9b::/96, RFC 6052). IPv4-mapped (::ffff:a.b.c.d) and 6to4
# (2002::/16) have their own accessors in `ipaddress`.
_LAST_32_BITS = tuple(
    ipaddress.ip_network(prefix) for prefix in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
# Never public, whatever they embed: NAT64 for local use (RFC 8215) and Teredo (2001::/32),
# a tunnel whose real endpoints are obfuscated IPv4 addresses.
_ALWAYS_REFUSED = tuple(ipaddress.ip_network(prefix) for prefix in ("64:ff9b:1::/48", "2001::/32"))


def embedded_ipv4(ip: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (mapped, compatible, translated, NAT64,
    6to4); [] for a plain IPv6 address."""
    found: list[IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if any(ip in network for network in _LAST_32_BITS):
        found.append(IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public_address(address: str | IPAddress) -> bool:
    """True for an address on the public internet: not loopback, private, link-local (cloud
    metadata), shared, reserved or multicast, and not an IPv6 form of such an IPv4 address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, IPv6Address):
        if ip.scope_id:  # fe80::1%eth0: the zone does not change what the address is
            ip = IPv6Address(str(ip).split("%", 1)[0])
        if any(ip in network for network in _ALWAYS_REFUSED):
            return False
        embedded = embedded_ipv4(ip)
        if embedded:
            # Judged by what the packets reach: 64:ff9b::808:808 is 8.8.8.8, ::127.0.0.1 is not.
            return all(is_public_address(v4) for v4 in embedded)
    return ip.is_global and not ip.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address when it is one, in any spelling the system resolver accepts
    (`127.1`, `2130706433`, `0x7f.0.0.1` are 127.0.0.1), else None (a name)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def host_problem(host: str) -> str | None:
    """Why `host` (from a URL) may not be called under the default policy, or None. A name is
    fine here: it is checked again, against what it resolves to, at every connection."""
    ip = literal_address(host)
    if ip is not None:
        return None if is_public_address(ip) else REFUSED
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return REFUSED
    return None
