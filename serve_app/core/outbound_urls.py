"""Which user-given URLs the service may call, and how such URLs appear in logs.

A prediction's ``webhook`` is a URL anyone may send (API keys are optional), and the service POSTs
to it from inside the cluster: without a check, that is a way to reach loopback services, the
VPC's private ranges and the cloud metadata endpoint (169.254.169.254, credentials included).
So a destination is allowed only when every address its host resolves to is public, unless the
operator's allow-list (``webhook_allowed_hosts``: host names, IP addresses or CIDR blocks) names
it. Resolution happens at creation (a clear 400) and again at delivery (DNS can change in
between), and delivery connects to the very address that was checked, so a second lookup cannot
swap in a private one (DNS rebinding).

Webhook URLs often carry credentials (``user:pass@``, ``?token=``, tokens in the path); logs get
only the scheme, host and port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Well-known NAT64 prefix: addresses in it reach the embedded IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class ForbiddenDestinationError(ValueError):
    """The URL is malformed, does not resolve, or leads somewhere not public and not allowed."""


class UnresolvableHostError(ForbiddenDestinationError):
    """DNS gave no answer: at delivery this may be passing, so it is retried like a 5xx."""


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowList:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks if network.version == address.version)


@dataclass(frozen=True)
class Destination:
    """A checked URL and the address to connect to (the one that was checked)."""

    url: str
    host: str
    port: int
    address: str


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_public_address(address: IPAddress) -> bool:
    """Globally routable unicast; loopback, private, link-local, multicast, reserved etc. are not."""
    inner = embedded_ipv4(address)
    if inner is not None:  # the packet ends up at the IPv4 address: judge that one
        return is_public_address(inner)
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_link_local
        and not address.is_loopback
        and not address.is_private
        and not address.is_unspecified
    )


def redact_url(url: str) -> str:
    """``https://user:pw@hooks.example.com:8443/t/SECRET?token=x`` -> ``https://hooks.example.com:8443/…``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    tail = "/…" if parts.path not in ("", "/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{port}{tail}"


async def resolve_destination(url: str, allowed: AllowList, timeout_s: float = 5.0) -> Destination:
    """Resolve ``url``'s host and return an address that may be called; raises ForbiddenDestinationError."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise ForbiddenDestinationError(f"malformed URL: {error}") from None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise ForbiddenDestinationError("only http and https URLs with a host can be called")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            async with asyncio.timeout(timeout_s):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
        except (OSError, TimeoutError) as error:
            raise UnresolvableHostError(
                f"host {host!r} could not be resolved ({type(error).__name__})"
            ) from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        if not addresses:
            raise ForbiddenDestinationError(f"host {host!r} has no address")
    named = allowed.allows_host(host)
    # Every address must pass: a name that resolves to one public and one private address could be
    # connected to either.
    for address in addresses:
        if not (named or allowed.allows_address(address) or is_public_address(address)):
            raise ForbiddenDestinationError(
                f"{host!r} resolves to {address}, which is not a public address; the operator can "
                "allow it with webhook_allowed_hosts"
            )
    return Destination(url=url, host=host, port=port, address=str(addresses[0]))
