"""Where events may be sent: only public internet addresses, at registration and at every delivery; a name is
resolved once per connection and the connection goes to the address that was checked; and a failure to get an
answer says nothing about the network behind the endpoint.

DNS and "the internet" are stand-ins here (`Network`): names get the answers a test gives, and a connection to a
public address goes where the test routes it (or fails at once, as an unreachable host would)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.main import create_app
from tests.conftest import Shop, make_settings
from tests.helpers import assert_problem, bearer, create_key, order_paid, send_event
from tests.jobs import drain_jobs
from tests.receiver import Receiver

PUBLIC = "93.184.215.14"  # stands for a receiver on the internet
NO_ANSWER = "could not deliver: the endpoint did not answer"


@dataclass
class Network:
    # name -> the resolver's successive answers (the last one repeats)
    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    # public address -> the local address standing in for it; other public addresses are unreachable
    routes: dict[str, str] = field(default_factory=dict)
    # every host a TCP connection was opened to, as the connection was asked for it
    connected_to: list[str] = field(default_factory=list)


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    net = Network()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = httpcore.AnyIOBackend.connect_tcp

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in net.answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        queue = net.answers[name]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        number = int(port or 0)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, number, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, number))
            for a in answer
        ]

    async def connect_tcp(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        net.connected_to.append(host)
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_global:
                if host not in net.routes:
                    raise httpcore.ConnectError("[Errno 101] Network is unreachable")
                host = net.routes[host]
        return await real_connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    return net


@contextlib.asynccontextmanager
async def served(database_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Any]:
    application = create_app(make_settings(database_url, tmp_path, **settings))
    async with application.router.lifespan_context(application):
        yield application


@contextlib.asynccontextmanager
async def api(application: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as client:
        yield client


async def platform_key(client: httpx.AsyncClient, admin: dict[str, str], shop: Shop) -> dict[str, str]:
    key = await create_key(client, admin, role="platform", platform_id=shop.platform["id"])
    return bearer(key["token"])


async def register(client: httpx.AsyncClient, headers: dict[str, str], url: str) -> httpx.Response:
    return await client.post(
        "/v1/webhook-endpoints", json={"url": url, "events": ["donation.recorded"]}, headers=headers
    )


async def last_error(client: httpx.AsyncClient, headers: dict[str, str], endpoint_id: str) -> str:
    response = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    [delivery] = response.json()["data"]
    return str(delivery["attempts"][-1]["error"])


async def test_in_production_only_public_internet_addresses_are_accepted(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shop: Shop,
    network: Network,
    database_url: str,
    tmp_path: Path,
) -> None:
    platform = await platform_key(client, admin, shop)
    network.answers["hooks.example"] = [[PUBLIC, "2606:4700:4700::1111"]]
    network.answers["split.example"] = [[PUBLIC, "100.100.100.200"]]
    refused = [
        "https://100.100.100.200/latest/meta-data/",  # a cloud's metadata service, in the shared block
        "https://100.64.0.1/",  # shared address space (carrier-grade NAT)
        "https://[2002:7f00:1::1]/",  # 6to4 form of 127.0.0.1
        "https://[::ffff:169.254.169.254]/",  # IPv4-mapped metadata address
        "https://[64:ff9b::a00:1]/",  # NAT64 form of 10.0.0.1
        "https://[64:ff9b:1::a00:1]/",  # local-use NAT64
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
        "https://[::127.0.0.1]/",  # IPv4-compatible
        "https://198.18.0.1/",  # benchmarking
        "https://192.0.0.8/",  # IETF protocol assignments
        "https://192.0.2.10/",  # documentation
        "https://[2001:db8::1]/",  # documentation
        "https://224.0.0.1/",  # multicast
        "https://240.0.0.1/",  # reserved
        "https://[fd00::1]/",  # unique local
        "https://[fe80::1]/",  # link-local
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest",
        "https://split.example/hook",  # one bad answer among good ones is enough
    ]
    accepted = [
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://[2002:808:808::1]/hook",  # 6to4 of a public address
        "https://[64:ff9b::808:808]/hook",  # NAT64 of a public address
        "https://hooks.example/hook",
    ]
    async with (
        served(database_url, tmp_path, environment="production") as production,
        api(production) as prod,
    ):
        for url in refused:
            problem = assert_problem(await register(prod, platform, url), 422, "invalid-request")
            assert "is not a public internet address" in problem["detail"], url
        for url in accepted:
            response = await register(prod, platform, url)
            assert response.status_code == 201, (url, response.text)
    assert network.connected_to == []  # checking a URL opens no connection


async def test_an_endpoint_whose_name_now_resolves_to_a_private_address_is_refused_at_delivery(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shop: Shop,
    network: Network,
    database_url: str,
    tmp_path: Path,
) -> None:
    platform = await platform_key(client, admin, shop)
    moved_to = {
        "one.example": "100.100.100.200",
        "two.example": "100.64.0.1",
        "three.example": "2002:7f00:1::1",
    }
    async with (
        served(database_url, tmp_path, environment="production") as production,
        api(production) as prod,
    ):
        endpoints = {}
        for name, address in moved_to.items():
            network.answers[name] = [[PUBLIC], [address]]  # public when registered, then moved
            response = await register(prod, platform, f"https://{name}/hook")
            assert response.status_code == 201, response.text
            endpoints[name] = response.json()["id"]
        await send_event(client, shop.platform, order_paid("TM-1", merchant=shop.external_id))
        await drain_jobs(production)
    for name, endpoint_id in endpoints.items():
        error = await last_error(client, platform, endpoint_id)
        assert error.startswith(f"refused: {name} is not a public internet address"), error
        assert moved_to[name] not in error  # our network's layout is not told to the endpoint's owner
    assert network.connected_to == []


def _certificate_for(name: str) -> tuple[bytes, bytes, bytes]:
    """A certificate authority's certificate, and a certificate and key for `name` that it signed (PEM)."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test authority")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        ca.public_bytes(pem),
        leaf.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


@dataclass
class ServerTls:
    context: ssl.SSLContext
    names_asked_for: list[str | None]  # the server names (SNI) clients sent


@pytest.fixture
def tls_for_hooks_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServerTls:
    """A server context with a certificate for hooks.example, from an authority the service is made to trust."""
    ca, leaf, key = _certificate_for("hooks.example")
    (tmp_path / "ca.pem").write_bytes(ca)
    (tmp_path / "leaf.pem").write_bytes(leaf + key)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    tls = ServerTls(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), [])

    def note_name(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        tls.names_asked_for.append(name)

    tls.context.load_cert_chain(tmp_path / "leaf.pem")
    tls.context.sni_callback = note_name  # type: ignore[assignment]
    return tls


async def test_dns_rebinding_cannot_turn_a_delivery_to_loopback(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shop: Shop,
    network: Network,
    tls_for_hooks_example: ServerTls,
    database_url: str,
    tmp_path: Path,
) -> None:
    platform = await platform_key(client, admin, shop)
    # The endpoint "on the internet" (PUBLIC, here on 127.0.0.2), and a receiver on loopback at the same port.
    internet = await Receiver(host="127.0.0.2", tls=tls_for_hooks_example.context).start()
    loopback_hits: list[str] = []

    async def note(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loopback_hits.append("connection")
        writer.close()

    loopback = await asyncio.start_server(note, "127.0.0.1", internet.port)
    try:
        network.routes[PUBLIC] = "127.0.0.2"
        url = f"https://hooks.example:{internet.port}/hook"
        response = await register(client, platform, url)  # where private addresses are allowed: no lookup
        assert response.status_code == 201, response.text
        internet.secrets.append(response.json()["secret"])
        # A rebinding resolver: a public address first, loopback from then on.
        network.answers["hooks.example"] = [[PUBLIC], ["127.0.0.1"]]
        await send_event(client, shop.platform, order_paid("TM-1", merchant=shop.external_id))
        async with served(database_url, tmp_path, events_allow_private_urls=False) as strict:
            await drain_jobs(strict)
    finally:
        loopback.close()
        await loopback.wait_closed()
        await internet.stop()

    assert loopback_hits == []
    assert network.connected_to == [PUBLIC]  # the address that was checked, and only it
    # Pinned to the address, yet TLS named the URL's host, its certificate was verified against it, and the Host
    # header is the URL's: the receiver got the signed message.
    [received] = internet.received
    assert received.verified_with == [0] and received.body["type"] == "donation.recorded"
    assert received.host_header == f"hooks.example:{internet.port}"
    assert tls_for_hooks_example.names_asked_for == ["hooks.example"]


async def test_no_answer_reads_the_same_whether_refused_timed_out_or_failed_in_tls(
    admin: dict[str, str], shop: Shop, database_url: str, tmp_path: Path
) -> None:
    slow = await Receiver(delay=3.0).start()
    plain = await Receiver().start()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    urls = {
        "refused": f"http://127.0.0.1:{closed_port}/hook",
        "timed out": slow.url,
        "tls": plain.url.replace(
            "http://", "https://"
        ),  # a TLS handshake with a server that speaks plain HTTP
    }
    try:
        async with served(database_url, tmp_path, events_timeout_seconds=1.0) as app, api(app) as client:
            platform = await platform_key(client, admin, shop)
            endpoints = {}
            for case, url in urls.items():
                response = await register(client, platform, url)
                assert response.status_code == 201, response.text
                endpoints[case] = response.json()["id"]
            await send_event(client, shop.platform, order_paid("TM-1", merchant=shop.external_id))
            await drain_jobs(app)
            errors = {case: await last_error(client, platform, e) for case, e in endpoints.items()}
    finally:
        await slow.stop()
        await plain.stop()
    assert errors == {case: NO_ANSWER for case in urls}
    assert len(slow.received) == 1  # the slow receiver did get the message: it only answered too late
