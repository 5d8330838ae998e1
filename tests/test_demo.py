"""`g4g demo` as a user runs it: a real process driving a real service over HTTP, checked against the API."""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from app.demo import programme
from app.web.i18n import Formatter
from tests.conftest import DATA_KEY
from tests.live import LiveServer, free_port, g4g_env, run_g4g

ORDERS = 40


def _demo(*args: str, env: dict[str, str], summary: Path) -> dict[str, Any]:
    done = run_g4g("demo", "--orders", str(ORDERS), "--seed", "7", "--json", str(summary), *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # Not a terminal: the summary points at the pages, and no key is printed where a pipe or a log could keep it.
    assert "/merchant" in done.stdout and "verified" in done.stdout
    assert "g4g_" not in done.stdout + done.stderr
    return dict(json.loads(summary.read_text()))


def _orders_by_number(api: httpx.Client, figures: dict[str, Any]) -> dict[int, tuple[Any, ...]]:
    """The run's orders as the service recorded them, by the order's number within the run."""
    prefix = f"DEMO-{figures['run_tag']}-"
    orders = {}
    for merchant_id in figures["merchants"].values():
        cursor = None
        while True:
            page = api.get(
                f"/v1/merchants/{merchant_id}/donations",
                params={"limit": 100} | ({"cursor": cursor} if cursor else {}),
            ).json()
            for row in page["data"]:
                if row["order_id"].startswith(prefix):
                    number = int(row["order_id"].removeprefix(prefix))
                    orders[number] = (merchant_id, row["currency"], row["donation"], row["reversed"])
            cursor = page["next_cursor"]
            if not cursor:
                break
    return orders


def _check_against_the_api(api: httpx.Client, figures: dict[str, Any]) -> None:
    funds = api.get("/v1/funds").json()
    for part in ("stages", "pool", "packages"):
        assert funds[part] == figures["funds"][part], part
    assert figures["orders_applied"] == ORDERS
    packages = api.get("/v1/packages", params={"run_id": figures["allocation_run"], "limit": 100}).json()[
        "data"
    ]
    assert len(packages) == figures["packages"] == figures["students_served"] > 0
    assert dict(Counter(p["status"] for p in packages)) == figures["boxes"]
    assert set(figures["boxes"]) <= {
        "accepted",
        "damaged",
        "missing",
    }  # every box reached its school's receipt
    shipments = {p["shipment_id"] for p in packages}
    statuses = [api.get(f"/v1/shipments/{s}").json()["status"] for s in shipments]
    assert statuses == ["receipt_confirmed"] * len(shipments)
    assert figures["shipments"] == figures["shipments_delivered"] == len(shipments)
    # Every event the service sent to the platform's endpoint arrived and verified with standardwebhooks.
    verified = figures["events_verified"]
    assert verified["donation.recorded"] == ORDERS
    assert figures["events_sent"] == figures["events_received"] == sum(verified.values())


def _at_least(count: int | str) -> int:
    """The least a published count can stand for ("<5" is 0 to 4)."""
    return count if isinstance(count, int) else 0


def _check_the_public_figures(public: httpx.Client) -> None:
    """The public report's identities on the demo's data, and its page showing the JSON's figures."""
    report = public.get("/v1/transparency").json()
    stages = report["money_by_stage_in_base_currency"]
    raised, billed = report["raised"]["amount"], stages["billed"] + stages["collected"]
    assert raised == stages["final"] + billed
    assert (
        raised >= billed >= stages["collected"] >= stages["in_pool"] == report["reached_pool"]["amount"] > 0
    )
    assert 0 < report["reached_pool_share_bps"] <= 10_000
    for money in report["money_by_stage"]:
        assert money["collected"] >= money["in_pool"] >= 0
    funnel = [_at_least(step["packages"]) for step in report["delivery_funnel"]]
    assert (
        funnel == sorted(funnel, reverse=True) and funnel[0] > 0
    )  # allocated ≥ shipped ≥ delivered ≥ accepted
    packages = report["packages"]
    assert packages["allocated"] == report["delivery_funnel"][0]["packages"]
    assert packages["delivered"] == report["delivery_funnel"][-1]["packages"]
    for place in report["countries"] + report["regions"]:
        assert _at_least(place["packages_delivered"]) <= _at_least(place["packages_allocated"])
    assert sum(s["orders"] for s in report["orders_by_stage"] if isinstance(s["orders"], int)) <= _at_least(
        report["orders"]
    )

    page = public.get("/", headers={"Accept-Language": "en"})
    assert page.status_code == 200

    def shown(element: str) -> str:
        found = re.search(rf'<div id="{element}">\s*<dt>[^<]*</dt>\s*<dd>([^<]*)</dd>', page.text)
        assert found, element
        return html.unescape(found.group(1)).strip()

    fmt, base = Formatter("en"), report["base_currency"]
    assert shown("total-raised") == fmt.money(raised, base)
    assert shown("total-pool") == fmt.money(report["reached_pool"]["amount"], base)
    assert shown("total-share") == fmt.percent_bps(report["reached_pool_share_bps"])
    assert shown("total-orders") == fmt.count(report["orders"])
    assert shown("total-merchants") == fmt.count(report["merchants_taking_part"])
    assert shown("total-packages") == fmt.count(packages["allocated"])
    assert shown("total-students") == fmt.count(packages["students_reached"])
    text = html.unescape(page.text)
    for amount in (
        raised,
        billed,
        stages["collected"],
        stages["in_pool"],
    ):  # the steps on the way to the pool
        assert fmt.money(amount, base) in text
    assert report == public.get("/v1/transparency").json()  # the same figures throughout


def test_the_seed_decides_the_orders_and_what_happens_to_them() -> None:
    plan = programme.plan_orders(7, 300)
    assert plan == programme.plan_orders(7, 300)
    assert plan != programme.plan_orders(8, 300)
    assert {o.merchant for o in plan} == {m.external_id for m in programme.MERCHANTS}
    assert {o.currency for o in plan} == {c for m in programme.MERCHANTS for c in m.catalogue}
    assert any(o.refund for o in plan) and any(o.cancelled for o in plan) and any(o.resent for o in plan)
    assert all(o.refund is None or 0 < o.refund < o.subtotal for o in plan)
    stories = {programme.shipment_story(7, s.name, 40) for s in programme.SCHOOLS}
    assert stories == {programme.shipment_story(7, s.name, 40) for s in programme.SCHOOLS}
    assert {outcome for story in stories for outcome in story.outcomes} == {"accepted", "damaged", "missing"}


def test_demo_runs_the_programme_end_to_end_and_its_seed_repeats_the_orders(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "g4g"
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(data_dir))
    # With no --url the demo starts its own g4g serve (here on the test's database) and, not on a terminal,
    # stops it when done.
    first = _demo("--port", str(free_port()), env=env, summary=tmp_path / "first.json")

    server = LiveServer(env | {"G4G_RETURN_WINDOW_DAYS": "0"}, tmp_path / "serve.log")
    try:
        token = run_g4g("create-api-key", "--role", "admin", "--name", "checker", env=env).stdout.strip()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
            _check_against_the_api(api, first)
            with httpx.Client(base_url=server.url) as public:
                _check_the_public_figures(public)
            # It made keys for its platform, partners and itself, and left none of them live.
            keys = api.get("/v1/api-keys", params={"limit": 100}).json()["data"]
            made = [k for k in keys if k["name"].startswith("demo ")]
            assert {k["role"] for k in made} == {"admin", "platform", "logistics"}
            assert all(k["revoked_at"] for k in made)
            # The same seed against a running service on the same data: new ids, the same orders and amounts.
            second = _demo(
                "--url", server.url, env=env | {"G4G_ADMIN_KEY": token}, summary=tmp_path / "second.json"
            )
            _check_against_the_api(api, second)
            assert second["run_tag"] != first["run_tag"] and second["merchants"] == first["merchants"]
            orders = _orders_by_number(api, first)
            assert orders == _orders_by_number(api, second)
            assert sorted(orders) == list(range(1, ORDERS + 1))
            assert len({donation["amount"] for _, _, donation, _ in orders.values()}) > ORDERS // 2
            assert any(reversed_["amount"] for *_, reversed_ in orders.values())
    finally:
        assert server.stop() == 0
    logs = (data_dir / "demo-serve.log").read_text() + server.log_path.read_text()
    codes = [s["roster_code"] for school in programme.SCHOOLS for s in programme.students_of(school)]
    assert not [code for code in codes if code in logs]
