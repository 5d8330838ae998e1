"""The console's pages through the ASGI app, on the logistics tests' programme (a pool, a partner, planned
shipments): each shows what the API answers, and each action goes through the API's own service — a class list
previewed (errors by row, never a roster code) then imported, a student erased, a planned shipment cancelled, a
bank transfer recorded, a key created (shown once) and revoked."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

from tests.conftest import DATA_KEY
from tests.helpers import order_paid, roster_csv, send_event, settle
from tests.live import g4g_env, run_g4g
from tests.logistics.conftest import Shipping
from tests.logistics.conftest import shipping as shipping  # the fixtures, for this folder too
from tests.packages.conftest import pool as pool
from tests.roster_codes import roster_codes
from tests.web.admin.conftest import enrol
from tests.web.admin.test_console_sign_in import assert_console_page
from tests.web.conftest import csrf_token

PAGES = (
    "/admin",
    "/admin/schools",
    "/admin/package-kinds",
    "/admin/fx-rates",
    "/admin/shipments",
    "/admin/statements",
    "/admin/webhooks",
    "/admin/api-keys",
    "/admin/allocation",
    "/admin/activity",
)


async def console(shipping: Shipping) -> httpx.AsyncClient:
    """The pool's client, signed in to the console with the pool's admin key (enrolled now). Sessions last 30
    minutes from the last page: tests set the programme up (settling moves the clock a month) before this."""
    token = shipping.admin["Authorization"].removeprefix("Bearer ")
    await enrol(shipping.client, token, shipping.now())
    return shipping.client


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_token(page)


async def test_every_page_shows_under_the_strict_policy(shipping: Shipping) -> None:
    planned = await shipping.shipment(["1", "2"])
    client = await console(shipping)
    for path in (*PAGES, f"/admin/shipments/{planned['id']}", f"/admin/schools/{planned['school']['id']}"):
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert_console_page(page)
    overview = (await client.get("/admin")).text
    funds = await shipping.pool.funds()
    assert f"${funds['pool']['amount'] / 100:,.2f}" in overview
    audit = await client.post("/admin/audit", data={"csrf_token": await form_token(client, "/admin")})
    assert audit.status_code == 200 and "Every check passed" in audit.text


async def test_a_class_list_is_previewed_with_its_errors_then_imported(shipping: Shipping) -> None:
    client = await console(shipping)
    token = await form_token(client, "/admin/schools")
    created = await client.post(
        "/admin/schools",
        data={
            "name": "Shree School",
            "country": "np",
            "region": "Bagmati",
            "logistics_partner_id": shipping.partner["id"],
            "teacher_name": "Sita Sharma",
            "phone": "01-4412345",
            "csrf_token": token,
        },
    )
    assert created.status_code == 303, created.text
    school_path = created.headers["location"].split("?")[0]
    school = await client.get(created.headers["location"])
    assert "Shree School" in school.text and "Created." in school.text
    codes = roster_codes(4)

    async def upload(body: bytes) -> httpx.Response:
        return await client.post(
            f"{school_path}/import",
            data={"csrf_token": csrf_token(await client.get(school_path))},
            files={"csv_file": ("class.csv", body, "text/csv")},
        )

    # A bad grade, then a repeated code: each problem by row and line, no roster code echoed, nothing saved.
    for rows, problem in (
        ([(codes[0], "1"), (codes[1], "99"), (codes[2], "3")], "row 2, line 3, grade: Input should be"),
        (
            [(codes[0], "1"), (codes[1], "2"), (codes[0], "3")],
            "row 3, line 4, roster_code: repeats the roster",
        ),
    ):
        bad = await upload(roster_csv(rows))
        assert bad.status_code == 422
        problems = re.findall(r"<li>(row [^<]+)</li>", bad.text)
        assert len(problems) == 1 and problems[0].startswith(problem), problems
        assert not any(code in bad.text for code in codes)
        assert "No students yet." in bad.text

    fixed = await upload(roster_csv([(codes[0], "1"), (codes[1], "2"), (codes[2], "3")]))
    assert fixed.status_code == 200
    assert "3 new students, 0 with a new grade, 0 unchanged" in fixed.text
    assert not any(code in fixed.text for code in codes)
    assert "No students yet." in fixed.text  # nothing saved before the confirmation
    done = await client.post(f"{school_path}/import/confirm", data={"csrf_token": csrf_token(fixed)})
    assert done.status_code == 303
    page = await client.get(done.headers["location"])
    assert "Class list imported: 3 new, 0 updated, 0 unchanged." in page.text
    assert len(re.findall(r"<tr><th scope=\"row\">stu_", page.text)) == 3
    # Confirming again imports nothing more: the previewed file was used up.
    again = await client.post(f"{school_path}/import/confirm", data={"csrf_token": csrf_token(page)})
    assert again.status_code == 409 and "Upload it again" in again.text

    # The next term's list: one moves up a grade, one is new, one stays.
    preview = await upload(roster_csv([(codes[0], "2"), (codes[1], "2"), (codes[3], "1")]))
    assert "1 new students, 1 with a new grade, 1 unchanged" in preview.text
    assert "1 → 2" in preview.text

    # A whole school's list: counted in full, the first 500 rows shown.
    big = await upload(roster_csv([(code, "3") for code in roster_codes(600)]))
    assert "600 new students, 0 with a new grade, 0 unchanged" in big.text
    assert "The first 500 rows of 600:" in big.text
    table = big.text[
        big.text.index('<table id="preview">') : big.text.index("</table>", big.text.index('id="preview"'))
    ]
    assert table.count('<tr><th scope="row">') == 500

    # Erasing a student: a confirmation first, then the tombstone.
    student_id = re.findall(r"/admin/students/(stu_\w+)/erase", page.text)[0]
    confirm = await client.get(f"/admin/students/{student_id}/erase")
    assert "deleted for good" in confirm.text
    erased = await client.post(
        f"/admin/students/{student_id}/erase", data={"csrf_token": csrf_token(confirm)}
    )
    assert erased.status_code == 303
    answer = await client.get(f"/v1/students/{student_id}", headers=shipping.admin)
    assert answer.json()["status"] == "erased" and answer.json()["roster_code"] is None


async def test_a_planned_shipment_is_cancelled_and_its_money_goes_back(shipping: Shipping) -> None:
    planned = await shipping.shipment(["1", "2"])
    moving = await shipping.shipment(["1"])
    await shipping.walk(moving["id"], ["handed_over"])
    before = await shipping.pool.funds()
    client = await console(shipping)
    board = await client.get("/admin/shipments")
    assert 'id="shipments-planned"' in board.text and planned["id"] in board.text
    page = await client.get(f"/admin/shipments/{planned['id']}")
    assert "Cancel this shipment" in page.text
    cancelled = await client.post(
        f"/admin/shipments/{planned['id']}/cancel",
        data={"note": "school closed", "csrf_token": csrf_token(page)},
    )
    assert cancelled.status_code == 303
    page = await client.get(cancelled.headers["location"])
    assert "The shipment was cancelled" in page.text and "Cancel this shipment" not in page.text
    assert "By the programme" in page.text and "school closed" in page.text
    shipment = await shipping.read(planned["id"], shipping.admin)
    assert shipment["status"] == "cancelled" and shipment["events"][-1]["posted_by"] == "programme"
    after = await shipping.pool.funds()
    assert after["pool"]["amount"] == before["pool"]["amount"] + 1000
    # A shipment on its way can't be cancelled: the service says why, nothing changes.
    refused = await client.post(
        f"/admin/shipments/{moving['id']}/cancel", data={"csrf_token": csrf_token(page)}
    )
    assert refused.status_code == 409 and "Nothing was changed" in refused.text
    assert (await shipping.read(moving["id"], shipping.admin))["status"] == "handed_over"


async def test_a_bank_transfer_is_recorded_for_the_open_amount_only(shipping: Shipping) -> None:
    pool = shipping.pool
    merchant = await pool.merchant("transfer-shop")
    event = order_paid(
        "T-1",
        merchant="transfer-shop",
        currency="USD",
        items=[{"sku": "X", "quantity": 1, "amount": 1234}],
        placed_at=pool.clock.now(),
    )
    assert (await send_event(pool.client, pool.platform, event)).json() == {"status": "applied"}
    pool.clock.advance(timedelta(days=31))
    run = await settle(pool.client, pool.admin, app=pool.app)
    [statement] = [s for s in run["statements"] if s["merchant_id"] == merchant["id"]]
    client = await console(shipping)
    page = await client.get("/admin/statements")
    assert f'id="statement-{statement["id"]}"' in page.text and "Waiting for a bank transfer" in page.text
    action = f"/admin/statements/{statement['id']}/bank-transfer"
    wrong = await client.post(
        action,
        data={"reference": "TT-1", "amount": "12.00", "currency": "USD", "csrf_token": csrf_token(page)},
    )
    assert wrong.status_code == 409 and "Nothing was changed" in wrong.text
    assert (await client.get(f"/v1/statements/{statement['id']}", headers=pool.admin)).json()["status"] == (
        "pending_payment"
    )
    paid = await client.post(
        action,
        data={"reference": "TT-1", "amount": "12.34", "currency": "USD", "csrf_token": csrf_token(page)},
    )
    assert paid.status_code == 303
    answer = (await client.get(f"/v1/statements/{statement['id']}", headers=pool.admin)).json()
    assert (answer["status"], answer["paid_via"], answer["payment_reference"]) == (
        "paid",
        "bank_transfer",
        "TT-1",
    )
    assert statement["id"] not in (await client.get("/admin/statements")).text


async def test_a_key_is_shown_once_and_revoking_it_locks_it_out(shipping: Shipping) -> None:
    client = await console(shipping)
    token = await form_token(client, "/admin/api-keys")
    created = await client.post(
        "/admin/api-keys",
        data={
            "name": "carrier phone",
            "role": "logistics",
            "scope_id": f"logistics:{shipping.partner['id']}",
            "csrf_token": token,
        },
    )
    assert created.status_code == 200
    new_token = re.search(r'<code id="new-token" class="token">(g4g_[^<]+)</code>', created.text)
    assert new_token
    carrier = {"Authorization": f"Bearer {new_token.group(1)}"}
    assert (
        await client.get(f"/v1/logistics-partners/{shipping.partner['id']}", headers=carrier)
    ).status_code == 200
    listing = await client.get("/admin/api-keys")
    assert new_token.group(1) not in listing.text and new_token.group(1)[:12] in listing.text
    key_id = re.search(r'<tr id="key-(key_\w+)"><th scope="row">carrier phone', listing.text)
    assert key_id
    revoked = await client.post(
        f"/admin/api-keys/{key_id.group(1)}/revoke", data={"csrf_token": csrf_token(listing)}
    )
    assert revoked.status_code == 303
    assert (
        await client.get(f"/v1/logistics-partners/{shipping.partner['id']}", headers=carrier)
    ).status_code == 401
    # A key needs the scope its role needs: the service's reason, nothing created.
    refused = await client.post(
        "/admin/api-keys",
        data={"name": "x", "role": "merchant", "scope_id": "", "csrf_token": csrf_token(listing)},
    )
    assert refused.status_code == 409 and "merchant_id" in refused.text


async def test_stale_shipments_come_first_on_the_board_and_the_overview(shipping: Shipping) -> None:
    old = await shipping.shipment(["1"])
    new = await shipping.shipment(["2"])  # a month later: the first has had no news since
    client = await console(shipping)
    board = (await client.get("/admin/shipments")).text
    planned = board[board.index('id="shipments-planned"') :]
    assert planned.index(old["id"]) < planned.index(new["id"])
    assert planned.count("Stale</span>") == 1
    overview = (await client.get("/admin")).text
    assert re.search(r'id="attention-shipments">.*?<dd>1</dd>', overview, re.S)
    assert old["id"] in overview and new["id"] not in overview


async def test_a_statement_needing_attention_shows_stripes_reason_and_is_charged_again(
    shipping: Shipping,
) -> None:
    from app.settlement import service as settlement

    pool = shipping.pool
    merchant = await pool.merchant("card-shop")
    event = order_paid(
        "C-1",
        merchant="card-shop",
        currency="USD",
        items=[{"sku": "X", "quantity": 1, "amount": 999}],
        placed_at=pool.clock.now(),
    )
    assert (await send_event(pool.client, pool.platform, event)).json() == {"status": "applied"}
    pool.clock.advance(timedelta(days=31))
    run = await settle(pool.client, pool.admin, app=pool.app)
    [statement] = [s for s in run["statements"] if s["merchant_id"] == merchant["id"]]
    async with pool.app.state.sessionmaker() as session, session.begin():  # as a refused charge leaves it
        await settlement.mark_needs_attention(session, statement["id"], reason="Your card was declined.")
    client = await console(shipping)
    page = await client.get("/admin/statements")
    card = page.text[page.text.index(f'id="statement-{statement["id"]}"') :]
    assert "Stripe: Your card was declined." in card and "Needs attention" in card
    retried = await client.post(
        f"/admin/statements/{statement['id']}/retry", data={"csrf_token": csrf_token(page)}
    )
    assert retried.status_code == 303
    after = (await client.get(f"/v1/statements/{statement['id']}", headers=pool.admin)).json()
    assert after["status"] == "payment_failed"  # charged again by the next run
    page = await client.get(retried.headers["location"])
    assert "The statement will be charged again by the next settlement run." in page.text
    assert f"/admin/statements/{statement['id']}/retry" not in page.text


async def test_the_overview_shows_the_last_audit_run_from_the_console_or_the_cli(
    shipping: Shipping, database_url: str, tmp_path: Path
) -> None:
    await shipping.shipment(["1", "2"])
    client = await console(shipping)
    assert "The audit has never been run." in (await client.get("/admin")).text
    ran = await client.post("/admin/audit", data={"csrf_token": await form_token(client, "/admin")})
    assert ran.status_code == 200 and "Every check passed" in ran.text
    last = _audit_last((await client.get("/admin")).text)
    assert "from the console: every check passed." in last

    # Someone edits the orders behind the ledger's back; the operator's `g4g audit` at the shell fails, and the
    # overview says so, by the failing checks' names (never their figures).
    async with shipping.pool.app.state.engine.begin() as connection:
        await connection.execute(text("UPDATE orders SET reversed_amount = reversed_amount + 1"))
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    assert run_g4g("audit", env=env).returncode == 1
    overview = (await client.get("/admin")).text
    assert "from the command line (g4g audit): these checks failed." in _audit_last(overview)
    failed = re.search(r'<ul class="checks" id="audit-failed">(.*?)</ul>', overview, re.S)
    assert failed and "orders_match_ledger" in failed.group(1) and "entries_balance" not in failed.group(1)
    async with shipping.pool.app.state.engine.connect() as connection:
        runs = (await connection.execute(text("SELECT via, ok, key_id FROM audit_runs ORDER BY id"))).all()
    assert [(r.via, r.ok) for r in runs] == [("console", True), ("cli", False)]
    assert runs[0].key_id is not None and runs[1].key_id is None


def _audit_last(page: str) -> str:
    found = re.search(r'id="audit-last">(.*?)</p>', page, re.S)
    assert found, page
    return " ".join(found.group(1).split())
