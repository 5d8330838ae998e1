"""A real Stripe-compatible server for the tests: `localstripe` (test-only, GPL-3), run in a child process.

The child serves localstripe's own aiohttp app on 127.0.0.1 only (its CLI binds every interface), on a port the
kernel picks, and reports that port on stdout. It keeps its state in memory only (localstripe otherwise pickles its
whole store to /tmp/localstripe.pickle on every write and reloads it on start), so every `LocalStripe` starts empty.
The child exits when its stdin closes, so it also goes away if the test process dies.

    with LocalStripe() as server:
        server.register_webhook(receiver.url, "whsec_test")
        client = stripe_client(server.url)
        ...

Webhooks (see `WebhookReceiver`): localstripe signs them like Stripe (`Stripe-Signature: t=<event.created>,v1=...`),
sends each about one second after the event, to every registered endpoint, once (no retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import stripe

from app.settlement.stripe_gateway import HTTPXClient

if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_API_KEY = "sk_test_g4g"

# Special PaymentMethod ids localstripe (like Stripe's test mode) turns into a new card PaymentMethod on use.
PM_CARD_OK = "pm_card_visa"  # 4242 4242 4242 4242: attaches and charges
PM_CARD_CHARGE_DECLINED = "pm_card_chargeCustomerFail"  # 4000 0000 0000 0341: attaches, every charge declined
PM_CARD_ATTACH_DECLINED = "pm_card_visa_chargeDeclined"  # 4000 0000 0000 0002: declined already when attached

_STARTUP_TIMEOUT = 20.0
_STOP_TIMEOUT = 5.0


class LocalStripe:
    """localstripe in a child process bound to 127.0.0.1 on a free port, with empty state on each start."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalStripe is not running")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalStripe:
        if self._process is not None:
            raise RuntimeError("LocalStripe is already running")
        self._log = tempfile.TemporaryFile(prefix="g4g-localstripe-")
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=tempfile.gettempdir(),
        )
        try:
            self.port = self._read_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], _STARTUP_TIMEOUT)
        line = self._process.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self._process.poll()
            raise RuntimeError(
                f"localstripe did not start (exit code {self._process.returncode}):\n{self.output()}"
            )
        return int(line)

    def output(self) -> str:
        """What the child wrote to stderr so far (tracebacks, failed webhook deliveries)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return bytes(self._log.read()).decode("utf-8", "replace")

    def stop(self) -> None:
        process, self._process, self.port = self._process, None, None
        if process is not None:
            assert process.stdin is not None and process.stdout is not None
            with contextlib.suppress(OSError):
                process.stdin.close()  # the child's signal to shut down cleanly
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalStripe:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _config(self, method: str, path: str, body: Mapping[str, object] | None = None) -> None:
        response = httpx.request(method, self.url + path, json=body, timeout=10)
        response.raise_for_status()

    def register_webhook(
        self, url: str, secret: str, events: list[str] | None = None, *, name: str = "g4g"
    ) -> None:
        """Deliver events (all, or only `events` types) to `url`, signed with `secret`. Same `name` replaces."""
        body: dict[str, object] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = events
        self._config("POST", f"/_config/webhooks/{name}", body)

    def unregister_webhooks(self) -> None:
        """Forget every registered webhook endpoint (a route this harness adds; localstripe has none)."""
        self._config("DELETE", "/_config/webhooks")

    def reset(self) -> None:
        """Empty all Stripe objects (localstripe's `DELETE /_config/data`) and forget the webhook endpoints."""
        self._config("DELETE", "/_config/data")
        self.unregister_webhooks()


def stripe_client(
    base_url: str,
    api_key: str = DEFAULT_API_KEY,
    *,
    max_network_retries: int = 0,
    http_client: stripe.HTTPClient | None = None,
) -> stripe.StripeClient:
    """A StripeClient whose calls (sync and `*_async`) go to `base_url`.

    Close it with `await close_stripe_client(client)` (or use `open_stripe_client`): its httpx pools hold sockets.
    """
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": base_url},
        http_client=http_client or HTTPXClient(timeout=10.0, allow_sync_methods=True),
        max_network_retries=max_network_retries,
    )


async def close_stripe_client(client: stripe.StripeClient) -> None:
    http_client = client._requestor._client  # stripe 16 keeps the transport there and has no public close
    if http_client is not None:
        http_client.close()  # type: ignore[no-untyped-call]
        await http_client.close_async()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def open_stripe_client(
    base_url: str, api_key: str = DEFAULT_API_KEY, **kwargs: Any
) -> AsyncIterator[stripe.StripeClient]:
    client = stripe_client(base_url, api_key, **kwargs)
    try:
        yield client
    finally:
        await close_stripe_client(client)


class BillableCustomer(NamedTuple):
    customer_id: str
    payment_method_id: str


async def create_customer_with_card(
    client: stripe.StripeClient, card: str = PM_CARD_OK, *, name: str = "Test Merchant"
) -> BillableCustomer:
    """A customer with `card` attached and set as `invoice_settings.default_payment_method`."""
    customer = await client.v1.customers.create_async({"name": name})
    method = await client.v1.payment_methods.attach_async(card, {"customer": customer.id})
    await client.v1.customers.update_async(
        customer.id, {"invoice_settings": {"default_payment_method": method.id}}
    )
    return BillableCustomer(customer.id, method.id)


async def create_chargeable_customer(
    client: stripe.StripeClient, *, name: str = "Test Merchant"
) -> BillableCustomer:
    """A customer whose off-session charges succeed."""
    return await create_customer_with_card(client, PM_CARD_OK, name=name)


async def create_declining_customer(
    client: stripe.StripeClient, *, name: str = "Test Merchant"
) -> BillableCustomer:
    """A customer whose card attaches fine but whose every charge is declined (402, code `card_declined`)."""
    return await create_customer_with_card(client, PM_CARD_CHARGE_DECLINED, name=name)


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]

    @property
    def signature(self) -> str:
        return self.headers.get("Stripe-Signature", "")


@dataclass
class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 (in the running event loop) that records what localstripe posts to it.

    `forward`, if given, gets each raw body and headers (e.g. to hand them to the app under test through an
    `httpx.ASGITransport`) and returns the status code to answer with; otherwise the receiver answers 200.
    """

    forward: Callable[[bytes, dict[str, str]], Awaitable[int]] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    port: int | None = None
    _runner: web.AppRunner | None = None
    _listening: asyncio.Server | None = None
    _connections: list[asyncio.BaseProtocol] = field(default_factory=list)
    _arrived: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("WebhookReceiver is not running")
        return f"http://127.0.0.1:{self.port}/webhooks/stripe"

    async def __aenter__(self) -> WebhookReceiver:
        from aiohttp import web

        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/webhooks/stripe", self._receive)
        # Stopping doesn't wait the default minute for a delivery localstripe began as the test ended.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        serve = self._runner.server
        assert serve is not None

        def connection() -> asyncio.BaseProtocol:
            handler = serve()
            self._connections.append(handler)
            return handler

        # Listening here rather than through a `TCPSite`, so that every connection is known: localstripe may
        # connect as the receiver stops (it posts every event to an endpoint subscribed to all), and a connection
        # accepted once aiohttp has shut its connections would never be closed (an "unclosed transport" warning
        # in a later test, an error under filterwarnings).
        self._listening = await asyncio.get_running_loop().create_server(connection, "127.0.0.1", 0)
        self.port = self._listening.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._listening is not None:
            self._listening.close()
            self._listening = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.sleep(0)  # connections accepted before the close get their protocol
        for handler in self._connections:
            transport = getattr(handler, "transport", None)
            if transport is not None:
                transport.close()
        self._connections.clear()
        self.port = None

    async def _receive(self, request: web.Request) -> web.Response:
        from aiohttp import web

        assert self._arrived is not None
        body = await request.read()
        headers = dict(request.headers)
        status = await self.forward(body, headers) if self.forward is not None else 200
        async with self._arrived:
            self.deliveries.append(Delivery(body, headers))
            self._arrived.notify_all()
        response = web.Response(status=status)
        # One delivery per connection: no idle keep-alive connection outlives the test to be closed by the
        # garbage collector in a later one (an "unclosed transport" warning, an error under filterwarnings).
        response.force_close()
        return response

    async def wait_for(self, predicate: Callable[[Delivery], bool], *, seconds: float = 10.0) -> Delivery:
        """The first delivery (already here or still to come) for which `predicate` holds."""
        assert self._arrived is not None

        def found() -> Delivery | None:
            return next((delivery for delivery in self.deliveries if predicate(delivery)), None)

        async with asyncio.timeout(seconds), self._arrived:
            await self._arrived.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result


def _serve(port: int = 0) -> None:  # pragma: no cover - runs in the child process
    """The child: localstripe's app on 127.0.0.1, memory-only state, until stdin closes.

    Also for trying settlement by hand: `python tests/stripe_server.py 8420` (Ctrl-D stops it)."""
    from aiohttp import web
    from localstripe import resources, server, webhooks

    resources.Store.dump_to_disk = lambda self: None

    async def forget_webhooks(request: web.Request) -> web.Response:
        webhooks._webhooks.clear()
        return web.Response()

    server.app.router.add_delete("/_config/webhooks", forget_webhooks)

    async def main() -> None:
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        sys.stdout.write(f"{runner.addresses[0][1]}\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
        await runner.cleanup()

    asyncio.run(main())


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
