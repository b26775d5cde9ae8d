"""Where outgoing webhooks may go: https to public addresses only (no SSRF into the network the
service runs in).

A URL's host is resolved (the event loop's ``getaddrinfo``) and EVERY address it resolves to
must be global: loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
multicast, reserved and unspecified addresses are refused, also when an IPv6 address embeds
one (IPv4-mapped, 6to4, Teredo, NAT64; Python counts some of these ranges as not global
whatever they embed, so they are refused outright). The check runs at registration and again
at each delivery, and the delivery then connects to the first address just checked
(:func:`pinned_request`), so a DNS answer that changes between check and connect (DNS
rebinding) cannot move it elsewhere.

``BILLING_GQL_ALLOW_PRIVATE_WEBHOOK_TARGETS=1`` (development) turns all of this off: plain http
and any address are allowed and the host is connected to as usual.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = [
    "TARGET_NOT_ALLOWED",
    "Target",
    "TargetRefused",
    "check_target",
    "getaddrinfo",
    "is_forbidden_address",
    "pinned_request",
]

TARGET_NOT_ALLOWED = "WEBHOOK_TARGET_NOT_ALLOWED"
"""The user-error code of a refused endpoint URL."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class TargetRefused(Exception):
    """The URL may not receive webhooks; the message says why (no secrets: host only)."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the addresses its host resolved to (all of them allowed)."""

    url: httpx.URL
    addresses: tuple[str, ...]


async def getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    """Resolve ``host`` with the running loop's resolver (tests replace this function)."""
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _embedded(ip: IPAddress) -> IPAddress | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_forbidden_address(ip: IPAddress) -> bool:
    """True for anything but a global unicast address (or one embedding a forbidden one)."""
    inner = _embedded(ip)
    if inner is not None and is_forbidden_address(inner):
        return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


async def check_target(raw: str) -> Target:
    """The https ``raw`` URL with its host's resolved addresses, all of them allowed.

    :raises TargetRefused: not https, unresolvable, or any address forbidden.
    """
    url = httpx.URL(raw)
    if url.scheme != "https" or not url.host:
        raise TargetRefused("the URL must be https")
    port = url.port or 443
    try:
        infos = await getaddrinfo(url.host, port)
    except (OSError, UnicodeError):
        raise TargetRefused(f"the host {url.host} does not resolve") from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # an IPv6 scope id is not part of the address
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise TargetRefused(f"the host {url.host} resolves to an unusable address") from None
        if is_forbidden_address(ip):
            raise TargetRefused(
                f"the host {url.host} resolves to a private, loopback, link-local or reserved "
                "address"
            )
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise TargetRefused(f"the host {url.host} does not resolve")
    return Target(url, tuple(addresses))


def pinned_request(
    client: httpx.AsyncClient, target: Target, content: bytes, headers: dict[str, str]
) -> httpx.Request:
    """A POST to ``target`` that connects to its first checked address, keeping the host name
    in the ``Host`` header and for TLS (SNI and certificate verification)."""
    url = target.url
    return client.build_request(
        "POST",
        url.copy_with(host=target.addresses[0]),
        content=content,
        headers={**headers, "host": url.netloc.decode("ascii")},
        extensions={"sni_hostname": url.raw_host.decode("ascii")},
    )
