"""Shipment events benchmark: one big shipment's events end to end, and many partners' events at once.

Run from the repository root:

    .venv/bin/python bench/shipments.py [--boxes 2000] [--shipments 200] [--concurrency 8]

It makes a fresh database on `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres) and
runs the service as an operator would (`g4g migrate`, `g4g create-api-key`, `g4g serve`, one worker, the return
window set to 0 days so paid money reaches the pool at once). Through the API it pays for the boxes, registers a
school of `--boxes` students and `--shipments` one-student schools, and runs an allocation. Then it times:

- the big shipment: each event from `handed_over` to `delivered`, the `receipt_confirmed` naming every box (a
  third damaged or missing: written off), and reading the shipment with all its boxes and history;
- `--shipments` small shipments: `handed_over` for each, `--concurrency` requests in flight (events/s, p50, p99).

It checks the audit afterwards. Exit status 1 if a request fails or the audit does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from served import served  # noqa: E402 - after the path is set

from tests.helpers import order_paid, signed_headers  # noqa: E402

COST = 2500


def _ok(response: httpx.Response) -> Any:
    if response.status_code not in (200, 201):
        raise SystemExit(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
        )
    return response.json()


def _settled(http: httpx.Client) -> Any:
    """A settlement run: queued through the API, run by the service's worker, waited for."""
    started = http.post("/v1/settlement-runs", json={})
    if started.status_code != 202:
        raise SystemExit(f"POST /v1/settlement-runs: {started.status_code} {started.text}")
    deadline = time.monotonic() + 120
    while True:
        run = _ok(http.get(f"/v1/settlement-runs/{started.json()['id']}"))
        if run["status"] in ("done", "failed") or time.monotonic() > deadline:
            if run["status"] != "done":
                raise SystemExit(f"settlement run did not finish: {run}")
            return run
        time.sleep(0.1)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _setup(http: httpx.Client, boxes: int, shipments: int) -> tuple[str, list[str], dict[str, str]]:
    """Money for every box, one big school and many small ones, one run. Returns the big shipment, the small
    ones, and the partner's headers."""
    platform = _ok(http.post("/v1/platforms", json={"name": "Bench"}))
    merchant = _ok(
        http.post(
            "/v1/merchants",
            json={"external_id": "bench", "name": "Bench", "country": "CN", "platform_id": platform["id"]},
        )
    )
    _ok(http.put(f"/v1/merchants/{merchant['id']}/donation-rule", json={"rate_bps": 10_000}))
    _ok(http.put(f"/v1/merchants/{merchant['id']}/billing", json={"method": "bank_transfer"}))
    event = order_paid(
        "B-1",
        merchant="bench",
        currency="USD",
        items=[{"sku": "X", "quantity": 1, "amount": COST * (boxes + shipments)}],
        placed_at=datetime.now(UTC),
    )
    body = json.dumps(event).encode()
    _ok(
        http.post(
            f"/v1/webhooks/orders/{platform['id']}",
            content=body,
            headers=signed_headers(platform["webhook_secret"], body),
        )
    )
    [statement] = _settled(http)["statements"]
    _ok(
        http.post(
            f"/v1/statements/{statement['id']}/payments",
            json={"reference": "B", "amount": statement["total"]},
        )
    )
    kind = _ok(
        http.post(
            "/v1/package-kinds",
            json={
                "name": "Primary box",
                "contents": [{"item": "Notebook", "quantity": 4}, {"item": "Pencil", "quantity": 6}],
                "unit_cost": {"amount": COST, "currency": "USD"},
                "countries": ["NP"],
                "grades": ["1"],
            },
        )
    )
    partner = _ok(http.post("/v1/logistics-partners", json={"name": "Bench freight"}))

    def school(students: int, n: int) -> str:
        created = _ok(
            http.post(
                "/v1/schools",
                json={
                    "name": f"School {n}",
                    "country": "NP",
                    "region": "Bagmati",
                    "logistics_partner_id": partner["id"],
                    "teacher_contact": {"name": "Teacher", "email": "teacher@example.org"},
                },
            )
        )
        rows = [{"roster_code": f"BENCH-{n}-{i:06d}", "grade": "1"} for i in range(students)]
        _ok(http.post(f"/v1/schools/{created['id']}/students", json={"students": rows}))
        return str(created["id"])

    big_school = school(boxes, 0)
    for n in range(shipments):
        school(1, n + 1)
    run = _ok(http.post("/v1/allocation-runs", json={"term": "T1", "package_kind_id": kind["id"]}))
    by_school = {s["school_id"]: s["shipment_id"] for s in run["schools"]}
    key = _ok(
        http.post(
            "/v1/api-keys", json={"role": "logistics", "name": "bench", "logistics_partner_id": partner["id"]}
        )
    )
    headers = {"Authorization": f"Bearer {key['token']}"}
    big = by_school.pop(big_school)
    return big, list(by_school.values()), headers


def _timed(http: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = _ok(http.request(method, path, **kwargs))
    return time.perf_counter() - started, answer


def _big_shipment(http: httpx.Client, shipment: str, headers: dict[str, str]) -> None:
    print("\none shipment's events (ms per request):")
    for status in ("handed_over", "in_transit", "out_for_delivery"):
        body = {"event_id": status, "status": status, "occurred_at": _now()}
        took, _ = _timed(http, "POST", f"/v1/shipments/{shipment}/events", json=body, headers=headers)
        print(f"  {status:<18} {took * 1000:8.1f}")
    proof = {
        "receiver_name": "Teacher",
        "receiver_role": "teacher",
        "evidence": {"url": "https://pod.example.org/1.jpg", "sha256": "a" * 64},
    }
    body = {"event_id": "delivered", "status": "delivered", "occurred_at": _now(), "proof": proof}
    took, _ = _timed(http, "POST", f"/v1/shipments/{shipment}/events", json=body, headers=headers)
    print(f"  {'delivered':<18} {took * 1000:8.1f}")
    took, read = _timed(http, "GET", f"/v1/shipments/{shipment}", headers=headers)
    print(f"  {'read (boxes)':<18} {took * 1000:8.1f}")
    outcomes = [
        {"package_id": p["id"], "outcome": "accepted"}
        if i % 3
        else {"package_id": p["id"], "outcome": "damaged", "reason": "carton crushed"}
        for i, p in enumerate(read["packages"])
    ]
    body = {"event_id": "receipt", "status": "receipt_confirmed", "occurred_at": _now(), "packages": outcomes}
    took, _ = _timed(http, "POST", f"/v1/shipments/{shipment}/events", json=body, headers=headers)
    print(
        f"  {'receipt_confirmed':<18} {took * 1000:8.1f}   ({len(outcomes)} outcomes, {len(json.dumps(body))} bytes)"
    )
    took, read = _timed(http, "POST", f"/v1/shipments/{shipment}/events", json=body, headers=headers)
    print(f"  {'receipt, again':<18} {took * 1000:8.1f}   (the first answer replayed)")
    took, read = _timed(http, "GET", f"/v1/shipments/{shipment}", headers=headers)
    print(f"  {'read (history)':<18} {took * 1000:8.1f}")


async def _many(
    base_url: str, shipments: list[str], headers: dict[str, str], concurrency: int
) -> list[float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for shipment in shipments:
        queue.put_nowait(shipment)
    times: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:

        async def worker() -> None:
            while not queue.empty():
                shipment = queue.get_nowait()
                body = {"event_id": "handed_over", "status": "handed_over", "occurred_at": _now()}
                started = time.perf_counter()
                answer = await http.post(f"/v1/shipments/{shipment}/events", json=body)
                times.append(time.perf_counter() - started)
                if answer.status_code != 201:
                    raise SystemExit(answer.text)

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return times


def main(args: argparse.Namespace) -> int:
    with served("shipments", G4G_RETURN_WINDOW_DAYS="0") as service:
        http = service.http
        big, small, partner = _setup(http, args.boxes, args.shipments)
        _big_shipment(http, big, partner)
        started = time.perf_counter()
        times = asyncio.run(_many(service.url, small, partner, args.concurrency))
        elapsed = time.perf_counter() - started
        times.sort()
        print(
            f"\n{len(times)} shipments handed over, {args.concurrency} in flight: {len(times) / elapsed:.0f} events/s,"
            f" p50 {statistics.median(times) * 1000:.1f} ms, p99 {times[int(len(times) * 0.99) - 1] * 1000:.1f} ms"
        )
        audit = _ok(http.get("/v1/audit"))
        print(f"\naudit ok: {audit['ok']}")
        return 0 if audit["ok"] else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--boxes", type=int, default=2000)
    parser.add_argument("--shipments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sys.exit(main(args))
