"""Who did what on the console: every POST of `/admin` either records its change in the activity log — with the
signed-in key, the action and resource the API's route for the same change records, the address — or is listed in
`NOT_RECORDED` with a reason. A refused change records nothing. The allocation page runs exactly the plan its dry
run showed, or says plainly why not."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from fastapi.routing import APIRoute, iter_route_contexts

from app.web.admin.endpoints import NOT_RECORDED
from tests.helpers import order_paid, roster_csv, send_event, settle
from tests.logistics.conftest import Shipping
from tests.logistics.conftest import shipping as shipping  # the fixtures, for this folder too
from tests.packages.conftest import pool as pool
from tests.roster_codes import roster_codes
from tests.web.admin.conftest import enrol, sign_in
from tests.web.admin.test_console_pages import console, form_token
from tests.web.conftest import csrf_token

# Each console POST that changes something, and the action the API records for the same change.
RECORDED = {
    "/admin/schools": "school.create",
    "/admin/schools/{school_id}": "school.update",
    "/admin/schools/{school_id}/import/confirm": "students.import",
    "/admin/students/{student_id}/erase": "student.erase",
    "/admin/fx-rates": "fx_rate.set",
    "/admin/allocation": "allocation.run",
    "/admin/shipments/{shipment_id}/cancel": "shipment.post_event",
    "/admin/statements/{statement_id}/bank-transfer": "statement.record_bank_transfer",
    "/admin/statements/{statement_id}/retry": "statement.reopen",
    "/admin/event-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry": "webhook_endpoint.retry_delivery",
    "/admin/api-keys": "api_key.create",
    "/admin/api-keys/{key_id}/revoke": "api_key.revoke",
}


def console_posts(app: Any) -> set[str]:
    routes = [context.original_route for context in iter_route_contexts(app.routes)]
    return {
        route.path
        for route in routes
        if isinstance(route, APIRoute) and route.path.startswith("/admin") and "POST" in (route.methods or ())
    }


async def test_every_console_post_records_its_change_or_says_why_not(shipping: Shipping) -> None:
    posts = console_posts(shipping.pool.app)
    assert set(NOT_RECORDED) <= posts and all(reason.endswith(".") for reason in NOT_RECORDED.values())
    unaccounted = posts - set(NOT_RECORDED) - set(RECORDED)
    assert unaccounted == set(), (
        "record these through `_change` (and walk them here), or list them in NOT_RECORDED"
    )
    assert set(RECORDED) <= posts


class Log:
    """The activity log as the API reads it (newest first), for what was added since the last look."""

    def __init__(self, client: httpx.AsyncClient, admin: dict[str, str]) -> None:
        self.client, self.admin, self.newest = client, admin, ""

    async def entries(self) -> list[dict[str, Any]]:
        answer = await self.client.get("/v1/activity", params={"limit": 100}, headers=self.admin)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["data"])

    async def start(self) -> None:
        entries = await self.entries()
        self.newest = entries[0]["id"] if entries else ""

    async def new(self) -> list[dict[str, Any]]:
        fresh = [e for e in await self.entries() if e["id"] > self.newest]
        if fresh:
            self.newest = fresh[0]["id"]
        return fresh


async def _key_of(shipping: Shipping) -> dict[str, Any]:
    token = shipping.admin["Authorization"].removeprefix("Bearer ")
    keys = (await shipping.client.get("/v1/api-keys", headers=shipping.admin)).json()["data"]
    [key] = [k for k in keys if token.startswith(k["token_prefix"])]
    return dict(key)


async def test_every_console_change_is_in_the_activity_log_with_its_key(shipping: Shipping) -> None:
    pool = shipping.pool
    # The programme before the operator signs in (settling moves the clock a month): a planned shipment, a
    # statement waiting for a transfer, one needing attention, a failing delivery to an event endpoint.
    endpoint = await pool.client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hook", "events": ["shipment.status_changed"]},
        headers=pool.admin,
    )
    assert endpoint.status_code == 201, endpoint.text
    planned = await shipping.shipment(["1", "2"])
    waiting, declined = await pool.merchant("transfer-shop"), await pool.merchant("card-shop")
    for n, merchant in enumerate((waiting, declined)):
        event = order_paid(
            f"A-{n}",
            merchant=merchant["external_id"],
            currency="USD",
            items=[{"sku": "X", "quantity": 1, "amount": 1234}],
            placed_at=pool.clock.now(),
        )
        assert (await send_event(pool.client, pool.platform, event)).json() == {"status": "applied"}
    pool.clock.advance(timedelta(days=31))
    run = await settle(pool.client, pool.admin, app=pool.app)
    statement = {s["merchant_id"]: s["id"] for s in run["statements"]}
    from app.settlement import service as settlement

    async with pool.app.state.sessionmaker() as session, session.begin():
        await settlement.mark_needs_attention(session, statement[declined["id"]], reason="Card declined.")
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.collect([(await pool.merchant(), "M-1", 1000)])

    client = await console(shipping)
    key = await _key_of(shipping)
    log = Log(client, pool.admin)
    await log.start()
    done: dict[str, dict[str, Any]] = {}

    async def post(path: str, action: str, data: dict[str, str], **kw: Any) -> httpx.Response:
        answer = await client.post(path, data=data, **kw)
        assert answer.status_code in (200, 303), (path, answer.text)
        [entry] = await log.new()
        assert (entry["action"], entry["via"]) == (action, "console")
        assert (entry["key_id"], entry["key_name"], entry["key_role"]) == (key["id"], key["name"], "admin")
        assert entry["address"] and entry["request_id"]
        done[action] = entry
        return answer

    async def refused(path: str, data: dict[str, str], status: int = 409) -> httpx.Response:
        answer = await client.post(path, data=data)
        assert answer.status_code == status, (path, answer.text)
        assert await log.new() == [], f"a refused {path} recorded something"
        return answer

    token = await form_token(client, "/admin")
    await refused("/admin/fx-rates", {"currency": "CNY", "rate": "cheap", "csrf_token": token})
    await refused("/admin/fx-rates", {"currency": "CNY", "rate": "0.14", "csrf_token": "stale"}, 403)
    await post("/admin/fx-rates", "fx_rate.set", {"currency": "cny", "rate": "0.14", "csrf_token": token})
    assert done["fx_rate.set"]["resource_id"] == "CNY"
    assert Decimal(done["fx_rate.set"]["details"]["rate"]) == Decimal("0.14")

    school_form = {
        "name": "Shree School",
        "country": "NP",
        "region": "Bagmati",
        "logistics_partner_id": shipping.partner["id"],
        "teacher_name": "Sita Sharma",
        "phone": "01-4412345",
        "csrf_token": token,
    }
    await refused("/admin/schools", {**school_form, "logistics_partner_id": "lgp_nobody"}, 409)
    created = await post("/admin/schools", "school.create", school_form)
    school_path = created.headers["location"].split("?")[0]
    school_id = school_path.rsplit("/", 1)[1]
    assert done["school.create"]["resource_id"] == school_id
    await post(
        school_path,
        "school.update",
        {
            "region": "Gandaki",
            "logistics_partner_id": shipping.partner["id"],
            "teacher_name": "Ram",
            "email": "ram@example.org",
            "csrf_token": token,
        },
    )
    assert (done["school.update"]["resource_type"], done["school.update"]["resource_id"]) == (
        "school",
        school_id,
    )

    codes = roster_codes(2)
    preview = await client.post(
        f"{school_path}/import",
        data={"csrf_token": token},
        files={"csv_file": ("class.csv", roster_csv([(codes[0], "1"), (codes[1], "2")]), "text/csv")},
    )
    assert preview.status_code == 200 and await log.new() == []  # a preview changes nothing
    await post(f"{school_path}/import/confirm", "students.import", {"csrf_token": token})
    assert done["students.import"]["details"] == {"received": 2, "created": 2, "updated": 0, "unchanged": 0}
    assert not any(code in str(done["students.import"]) for code in codes)
    await refused(f"{school_path}/import/confirm", {"csrf_token": token})  # used up
    page = await client.get(school_path)
    student_id = re.findall(r"/admin/students/(stu_\w+)/erase", page.text)[0]
    await post(f"/admin/students/{student_id}/erase", "student.erase", {"csrf_token": token})
    await refused("/admin/students/stu_nobody/erase", {"csrf_token": token})

    dry = await client.get("/admin/allocation", params={"term": "2027-T2", "package_kind_id": kind["id"]})
    fingerprint = re.search(r'name="expected_plan_fingerprint" value="([^"]+)"', dry.text)
    assert fingerprint, dry.text
    allocate = {"term": "2027-T2", "package_kind_id": kind["id"], "csrf_token": token}
    await refused("/admin/allocation", {**allocate, "expected_plan_fingerprint": ""})  # no dry run, no run
    await post(
        "/admin/allocation", "allocation.run", {**allocate, "expected_plan_fingerprint": fingerprint[1]}
    )
    assert done["allocation.run"]["details"]["as_dry_run_planned"] is True
    assert done["allocation.run"]["details"]["plan_fingerprint"] == fingerprint[1]

    cancel = f"/admin/shipments/{planned['id']}/cancel"
    await post(cancel, "shipment.post_event", {"note": "school closed", "csrf_token": token})
    assert done["shipment.post_event"]["details"]["status_after"] == "cancelled"
    await refused(cancel, {"csrf_token": token})  # cancelled already

    transfer = f"/admin/statements/{statement[waiting['id']]}/bank-transfer"
    amount = {"reference": "TT-9", "currency": "USD", "csrf_token": token}
    await refused(transfer, {**amount, "amount": "12.00"})
    await post(transfer, "statement.record_bank_transfer", {**amount, "amount": "12.34"})
    assert done["statement.record_bank_transfer"]["merchant_id"] == waiting["id"]
    await post(
        f"/admin/statements/{statement[declined['id']]}/retry", "statement.reopen", {"csrf_token": token}
    )
    assert done["statement.reopen"]["merchant_id"] == declined["id"]
    await refused(f"/admin/statements/{statement[declined['id']]}/retry", {"csrf_token": token})

    endpoint_id = endpoint.json()["id"]
    deliveries = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=pool.admin)
    delivery_id = deliveries.json()["data"][0]["id"]
    replay = f"/admin/event-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry"
    await post(replay, "webhook_endpoint.retry_delivery", {"csrf_token": token})
    assert done["webhook_endpoint.retry_delivery"]["details"] == {"delivery_id": delivery_id}
    await refused(f"/admin/event-endpoints/{endpoint_id}/deliveries/dlv_nobody/retry", {"csrf_token": token})

    key_form = {"name": "carrier", "role": "logistics", "scope_id": f"logistics:{shipping.partner['id']}"}
    await refused("/admin/api-keys", {**key_form, "role": "merchant", "csrf_token": token})
    made = await post("/admin/api-keys", "api_key.create", {**key_form, "csrf_token": token})
    new_token = re.search(r'<code id="new-token" class="token">(g4g_[^<]+)</code>', made.text)
    assert new_token and new_token[1] not in str(done["api_key.create"])
    made_id = done["api_key.create"]["resource_id"]
    await post(f"/admin/api-keys/{made_id}/revoke", "api_key.revoke", {"csrf_token": token})
    await refused("/admin/api-keys/key_nobody/revoke", {"csrf_token": token})

    assert set(done) == set(RECORDED.values())
    # The console's page of the log shows them, by key and by action.
    shown = await client.get("/admin/activity", params={"key_id": key["id"], "action": "allocation.run"})
    assert shown.status_code == 200
    # The console's run, and the API's that made the planned shipment: the same key, through each.
    assert shown.text.count('<tr id="entry-') == 2 and done["allocation.run"]["id"] in shown.text
    assert shown.text.count('<small class="note via">Console · ') == 1
    every = await client.get("/admin/activity", params={"key_id": key["id"]})
    assert all(entry["id"] in every.text for entry in done.values())
    bad = await client.get("/admin/activity", params={"action": "Drop table"})
    assert bad.status_code == 422 and "This filter can match nothing: Action." in bad.text


async def test_the_console_records_what_the_api_records_for_the_same_change(shipping: Shipping) -> None:
    client = await console(shipping)
    token = await form_token(client, "/admin/fx-rates")
    log = Log(client, shipping.admin)
    await log.start()
    api = await client.put("/v1/fx-rates/CNY", json={"rate": "0.14"}, headers=shipping.admin)
    assert api.status_code == 200
    await client.post("/admin/fx-rates", data={"currency": "CNY", "rate": "0.15", "csrf_token": token})
    from_console, from_api = await log.new()
    same = ("action", "resource_type", "resource_id", "merchant_id", "key_id", "key_name")
    assert [from_console[f] for f in same] == [from_api[f] for f in same]
    assert (from_api["via"], from_console["via"]) == ("api", "console")
    assert set(from_console["details"]) == set(from_api["details"])


async def test_a_dry_runs_plan_is_run_or_refused_if_the_pool_changed(shipping: Shipping) -> None:
    pool = shipping.pool
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.collect([(await pool.merchant(), "M-1", 1000)])
    school, students = await pool.school(["1", "1", "2"])
    operator = await enrol(pool.client, pool.admin["Authorization"].removeprefix("Bearer "), pool.clock.now())
    client = pool.client
    log = Log(client, pool.admin)
    await log.start()
    asked = {"term": "2027-T1", "package_kind_id": kind["id"]}
    dry = await client.get("/admin/allocation", params=asked)
    assert dry.status_code == 200
    rows = re.findall(
        r'<tr><th scope="row">(\d+)</th>\s*<td data-label="Student"><code>(stu_\w+)</code>', dry.text
    )
    assert [int(rank) for rank, _ in rows] == [1, 2]
    assert [s for _, s in rows] == [s["id"] for s in students[:2]]
    assert "Never received a package" in dry.text and school["name"] in dry.text
    assert not any(s["roster_code"] in dry.text for s in students)
    fingerprint = re.search(r'name="expected_plan_fingerprint" value="([^"]+)"', dry.text)
    assert fingerprint and await log.new() == []  # a dry run writes nothing
    token = csrf_token(dry)

    # Money arrives between the dry run and the run: refused, plainly, and nothing is made.
    await pool.collect([(await pool.merchant(), "M-2", 500)])
    signed = await sign_in(client, operator, operator.code(pool.clock.now()))  # settling took a month
    assert signed.status_code == 303
    await log.start()  # (settling and paying were recorded, through the API)
    token = await form_token(client, "/admin/allocation")
    body = {**asked, "expected_plan_fingerprint": fingerprint[1], "csrf_token": token}
    changed = await client.post("/admin/allocation", data=body)
    assert changed.status_code == 409
    assert (
        "the pool (money collected or spent since" in changed.text and "Nothing was changed" in changed.text
    )
    assert await log.new() == []
    assert (await client.get("/v1/allocation-runs", headers=pool.admin)).json()["data"] == []

    again = await client.get("/admin/allocation", params=asked)
    fingerprint = re.search(r'name="expected_plan_fingerprint" value="([^"]+)"', again.text)
    assert fingerprint
    ran = await client.post("/admin/allocation", data={**body, "expected_plan_fingerprint": fingerprint[1]})
    assert ran.status_code == 303
    page = await client.get(ran.headers["location"])
    assert "Allocated: the plan was made" in page.text
    [run] = (await client.get("/v1/allocation-runs", headers=pool.admin)).json()["data"]
    assert run["packages"] == 3 and run["plan_fingerprint"] == fingerprint[1]
    assert f'id="run-{run["id"]}"' in page.text
