"""Where events may be sent: public internet addresses only, and exactly the addresses that were checked.

Whoever registers an endpoint chooses its URL, so without care the service could be made to post to itself, to a
cloud's metadata service or to anything else on its own network. The rule is an allow-list: an address is acceptable
only if it is global unicast and outside every block of IANA's special-purpose registries. IPv6 forms that carry an
IPv4 address the network will actually reach (IPv4-mapped, NAT64's well-known prefix, 6to4) are judged by that
IPv4 address; Teredo and the other IETF protocol blocks, local-use NAT64 and IPv4-compatible addresses are refused.

A connection resolves its host once, judges every address the answer holds (one bad address refuses the host) and
connects to those very addresses, so a resolver that answers differently a moment later (DNS rebinding) changes
nothing. Only the TCP connection is pinned: the URL is left as it is, so TLS still names the URL's host (SNI),
verifies the certificate against it, and the Host header is the URL's."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import anyio
import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeAddress(Exception):
    """The URL's host is, or resolves to, an address events may not be sent to (or does not resolve at all)."""


_IPV4_SPECIAL = tuple(
    ipaddress.IPv4Network(block)
    for block in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space: carrier-grade NAT, and some clouds' metadata (100.100.100.200)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, and most clouds' metadata (169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.31.196.0/24",  # AS112
        "192.52.193.0/24",  # AMT
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "192.175.48.0/24",  # AS112 direct delegation
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the limited broadcast address
    )
)
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")  # everything outside it is special or unassigned
_IPV6_SPECIAL = tuple(
    ipaddress.IPv6Network(block)
    for block in (
        "2001::/23",  # IETF protocol assignments: Teredo (2001::/32), benchmarking, ORCHID, AMT, AS112
        "2001:db8::/32",  # documentation
        "2620:4f:8000::/48",  # AS112 direct delegation
        "3fff::/20",  # documentation
    )
)
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a connection to this IPv6 address really reaches, if it is one of the forms that carry one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour  # 2002::/16, or None


def is_public(address: Address) -> bool:
    """Global unicast and in no special-purpose block (`is_global` alone changes between Python versions and lets
    some of them through)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:  # a zone index means a link-scoped address
            return False
        ipv4 = carried_ipv4(address)
        if ipv4 is not None:
            return is_public(ipv4)
        return (
            address in _IPV6_GLOBAL_UNICAST
            and not any(address in block for block in _IPV6_SPECIAL)
            and address.is_global
        )
    return not any(address in block for block in _IPV4_SPECIAL) and address.is_global


async def public_addresses(host: str) -> list[Address]:
    """Resolve the host once; its addresses in the resolver's order if every one of them is public."""
    try:
        infos = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeAddress(f"{host} does not resolve") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeAddress(f"{host} does not resolve")
    if not all(is_public(address) for address in addresses):
        # The address itself is left out: it would tell the endpoint's owner how our own network is laid out.
        raise UnsafeAddress(
            f"{host} is not a public internet address (it is, or resolves to, a private, loopback, link-local, "
            "shared, multicast, reserved or other special-purpose address)"
        )
    return addresses


class PublicOnlyNetwork(httpcore.AsyncNetworkBackend):
    """httpcore's network, except that a TCP connection goes only to the public addresses its host resolved to,
    checked and connected to in one step: tried in the resolver's order, all within the one connect timeout."""

    def __init__(self) -> None:
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else anyio.current_time() + timeout
        try:
            with anyio.fail_after(timeout):  # a resolver that hangs counts against the connect timeout too
                addresses = await public_addresses(host)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"{host} did not resolve within {timeout} s") from None
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for index, address in enumerate(addresses):
            # What is left of the timeout, shared among the addresses not tried yet: one that never answers (an
            # IPv6 address without a route, say) leaves time for the next.
            share = None if deadline is None else (deadline - anyio.current_time()) / (len(addresses) - index)
            try:
                return await self._network.connect_tcp(
                    str(address),
                    port,
                    timeout=share,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # public_addresses returns at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("events are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


class _PublicOnlyTransport(httpx.AsyncHTTPTransport):
    def __init__(self, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        # httpx takes no network backend; the httpcore pool under it does. The pool is built as httpx builds it
        # (the same certificate authorities: certifi's, or SSL_CERT_FILE / SSL_CERT_DIR when set).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyNetwork(),
        )


def events_client(*, timeout_seconds: float, public_only: bool) -> httpx.AsyncClient:
    """The client events are sent with: a timeout on every phase of every call, no redirects (a redirect could
    lead anywhere), no proxy from the environment (the check must see the real destination), and with
    `public_only` connections to public addresses only. A kept-alive connection (idle at most 5 s) is reused for
    its own host: it goes to an address that was checked when it was opened."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    transport: httpx.AsyncBaseTransport = (
        _PublicOnlyTransport(limits=limits) if public_only else httpx.AsyncHTTPTransport(limits=limits)
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
        follow_redirects=False,
        trust_env=False,
    )
