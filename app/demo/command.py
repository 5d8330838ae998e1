"""`g4g demo`: against `--url` with `--admin-key`, or a `g4g serve` it starts on the embedded database."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

import httpx
from rich.console import Console

from app.demo.api import Api, DemoError
from app.demo.receiver import EventReceiver
from app.demo.run import DemoRun
from app.demo.service import DemoService
from app.demo.summary import Summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--orders", type=int, default=500, help="orders to send (default 500)")
    parser.add_argument("--seed", type=int, default=1, help="the same seed plans the same orders and stories")
    parser.add_argument("--url", help="a running service; default: start one")
    parser.add_argument(
        "--admin-key",
        default=os.environ.get("G4G_ADMIN_KEY"),
        help="an admin key for --url (default $G4G_ADMIN_KEY)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="without --url: the started service's data (default $G4G_DATA_DIR or .g4g, like make run)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="without --url: its port (default $G4G_PORT or 8000)"
    )
    parser.add_argument(
        "--stop",
        action="store_true",
        help="without --url: stop the service once done (the default when not on a terminal)",
    )
    parser.add_argument("--json", type=Path, help="also write the summary's figures here (no keys)")


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    # The merchant's key is a secret: printed to a terminal only, never into a file or a pipe.
    show_key = console.is_terminal
    stay = console.is_terminal and sys.stdin.isatty() and not args.stop
    if args.orders < 1:
        console.print("g4g demo: --orders must be at least 1", style="red")
        return 2
    service: DemoService | None = None
    try:
        if args.url:
            if not args.admin_key:
                console.print("g4g demo: --url needs --admin-key (or G4G_ADMIN_KEY)", style="red")
                return 2
            url, admin_key, bootstrap_key = args.url, args.admin_key, None
        else:
            data_dir = args.data_dir or Path(os.environ.get("G4G_DATA_DIR") or ".g4g")
            port = args.port or int(os.environ.get("G4G_PORT") or 8000)
            service = DemoService(data_dir, port)
            where = (
                "DATABASE_URL" if os.environ.get("DATABASE_URL") else f"the embedded database in {data_dir}/"
            )
            with console.status(f"starting g4g serve on {service.url} ({where})"):
                service.migrate()
                service.start()
                bootstrap_key = f"demo bootstrap {secrets.token_hex(4)}"
                admin_key = service.create_admin_key(bootstrap_key)
            console.print(
                f"[green]✓[/green] g4g serve on {service.url} (pid {service.pid}), log {service.log_path}"
            )
            url = service.url
        summary = asyncio.run(_drive(url, admin_key, bootstrap_key, args, console, show_sign_in_key=show_key))
    except DemoError as exc:
        console.print(f"g4g demo: {exc}", style="red")
        if service is not None:
            service.stop()
        return 1
    except KeyboardInterrupt:
        console.print("g4g demo: interrupted")
        if service is not None:
            service.stop()
        return 130
    if args.json:
        args.json.write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    summary.render(console)
    if service is not None:
        if stay:
            console.print(
                f"\nThe service keeps running for you to look around (pid {service.pid}); "
                "[bold]Ctrl-C[/bold] stops it and its database. `make run` serves the same data later."
            )
            try:
                service.wait()
            except KeyboardInterrupt:
                pass
        code = service.stop()
        console.print(f"g4g serve stopped ({code}).")
    return 0


async def _drive(
    url: str,
    admin_key: str,
    bootstrap_key: str | None,
    args: argparse.Namespace,
    console: Console,
    *,
    show_sign_in_key: bool,
) -> Summary:
    api = Api(url)
    receiver = EventReceiver().start()
    try:
        ready = await api.http.get("/readyz")
        if ready.status_code != 200:
            raise DemoError(f"{url} is not ready: GET /readyz answered {ready.status_code}")
        demo = DemoRun(
            api,
            admin_key,
            orders=args.orders,
            seed=args.seed,
            console=console,
            receiver=receiver,
            show_sign_in_key=show_sign_in_key,
            revoke_admin_key_named=bootstrap_key,
        )
        return await demo.run()
    except httpx.HTTPError as exc:
        raise DemoError(f"{url}: {exc!r}") from None
    finally:
        receiver.stop()
        await api.close()
