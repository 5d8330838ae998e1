"""A stolen admin key can't brute-force the second factor: wrong codes (TOTP, replayed or recovery) count against
the factor across fresh sign-ins, and the tenth in a row locks it — the right code is then refused too — until an
operator runs `g4g admin-factor unlock`. A code accepted sets the count back to zero. Every wrong code and the lock
are in the activity log under the key, and neither the log nor the activity log holds a code or a secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.web.admin.factors import unlock
from tests import conftest
from tests.conftest import DATA_KEY
from tests.live import g4g_env, run_g4g
from tests.web.admin.conftest import Operator, enrol, give_key, sign_in
from tests.web.conftest import csrf_token

START = datetime(2026, 12, 6, 9, 0, 5, tzinfo=UTC)
MAX_FAILURES = 10  # G4G_ADMIN_FACTOR_MAX_FAILURES's default
LOCKED = "second factor is locked"


@pytest.fixture
def clock(app: Any) -> Any:
    from app.core.clock import FrozenClock

    app.state.clock = FrozenClock(START)
    return app.state.clock


@pytest.fixture
async def operator(client: httpx.AsyncClient, clock: Any, admin_token: str) -> Operator:
    """An enrolled key, signed out again."""
    enrolled = await enrol(client, admin_token, clock.now())
    await sign_out(client)
    return enrolled


@pytest.fixture
async def other_browser(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as http:
        yield http


async def sign_out(client: httpx.AsyncClient) -> None:
    await client.post("/admin/sign-out", data={"csrf_token": csrf_token(await client.get("/admin"))})


def wrong_code(operator: Operator, at: datetime) -> str:
    """Six digits that are none of the codes valid around `at` (one step either side)."""
    valid = {operator.code(at + timedelta(seconds=30 * step)) for step in (-1, 0, 1)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in valid)


async def codes_on_fresh_sign_in(
    client: httpx.AsyncClient, operator: Operator, codes: list[str]
) -> list[httpx.Response]:
    """The key again (a new pending session), then each code in turn."""
    assert (await give_key(client, operator.token)).status_code == 303
    form = await client.get("/admin")
    return [
        await client.post("/admin/second-factor", data={"code": code, "csrf_token": csrf_token(form)})
        for code in codes
    ]


async def factor_state(app: Any) -> tuple[int, datetime | None]:
    async with app.state.engine.connect() as db:
        row = (await db.execute(text("SELECT failed_attempts, locked_at FROM admin_factors"))).one()
    return int(row.failed_attempts), row.locked_at


async def key_id(app: Any) -> str:
    async with app.state.engine.connect() as db:
        return str((await db.execute(text("SELECT api_key_id FROM admin_factors"))).scalar_one())


async def activity(client: httpx.AsyncClient, admin: dict[str, str], action: str) -> list[dict[str, Any]]:
    answer = await client.get("/v1/activity", params={"action": action, "limit": "100"}, headers=admin)
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["data"]))  # oldest first


async def test_wrong_codes_across_fresh_sign_ins_lock_the_factor_until_an_operator_unlocks_it(
    client: httpx.AsyncClient,
    other_browser: httpx.AsyncClient,
    app: Any,
    clock: Any,
    operator: Operator,
    admin: dict[str, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    # Nine wrong codes over three sign-ins an hour apart: no pending session and no per-minute limit sees them
    # all, but the factor does. TOTP-shaped and recovery-shaped guesses alike.
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        answers = await codes_on_fresh_sign_in(
            client,
            operator,
            [wrong_code(operator, clock.now()), "abcde-fghjk", wrong_code(operator, clock.now())],
        )
        assert [a.status_code for a in answers] == [401, 401, 401]
    assert await factor_state(app) == (9, None)

    clock.advance(timedelta(hours=1))
    # Another browser holds the key already, waiting for its code while the factor gets locked.
    assert (await give_key(other_browser, operator.token)).status_code == 303
    waiting = await other_browser.get("/admin")
    [tenth] = await codes_on_fresh_sign_in(client, operator, [wrong_code(operator, clock.now())])
    assert tenth.status_code == 403 and LOCKED in tenth.text
    failures, locked_at = await factor_state(app)
    assert failures == MAX_FAILURES and locked_at == clock.now()

    # Locked: the key alone no longer opens a pending session, and the right code is refused where one was open.
    again = await give_key(client, operator.token)
    assert again.status_code == 403 and LOCKED in again.text
    assert "g4g_admin=" not in again.headers.get("set-cookie", "")
    right = await other_browser.post(
        "/admin/second-factor",
        data={"code": operator.code(clock.now()), "csrf_token": csrf_token(waiting)},
    )
    assert right.status_code == 403 and LOCKED in right.text
    assert "Admin API key" in (await other_browser.get("/admin")).text  # that pending session is over
    assert (await factor_state(app))[
        0
    ] == MAX_FAILURES  # the refused right code checked nothing, counted nothing

    # The activity log names the key for every wrong code and for the lock.
    key = await key_id(app)
    fails = await activity(client, admin, "admin_factor.fail")
    assert [e["details"]["failures"] for e in fails] == list(range(1, MAX_FAILURES + 1))
    assert {e["details"]["kind"] for e in fails} == {"totp_code", "recovery_code"}
    assert all(
        (e["key_id"], e["key_name"], e["resource_id"], e["address"], e["via"])
        == (key, "test operator", key, "127.0.0.1", "console")
        for e in fails
    )
    [lock] = await activity(client, admin, "admin_factor.lock")
    assert lock["key_id"] == key and lock["details"] == {"failures": MAX_FAILURES, "limit": MAX_FAILURES}

    # The operator at the server unlocks it; the right code works again.
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    unknown = run_g4g("admin-factor", "unlock", "--key-id", "key_nobody", env=env)
    assert unknown.returncode == 1 and "no console second factor" in unknown.stderr
    done = run_g4g("admin-factor", "unlock", "--key-id", key, env=env)
    assert done.returncode == 0, done.stderr
    assert f"unlocked the second factor of {key} (10 wrong codes forgotten)" in done.stderr
    assert await factor_state(app) == (0, None)
    [unlock] = await activity(client, admin, "admin_factor.unlock")
    assert (unlock["via"], unlock["key_id"], unlock["resource_id"]) == ("cli", None, key)
    assert unlock["details"] == {"failures": MAX_FAILURES, "was_locked": True}

    clock.advance(timedelta(seconds=30))
    signed_in = await sign_in(client, operator, operator.code(clock.now()))
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/admin"
    assert "Ledger audit" in (await client.get("/admin")).text


async def test_a_code_accepted_sets_the_count_back_to_zero(
    client: httpx.AsyncClient, app: Any, clock: Any, operator: Operator
) -> None:
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        await codes_on_fresh_sign_in(client, operator, [wrong_code(operator, clock.now())] * 3)
    assert await factor_state(app) == (9, None)
    # A recovery code accepted resets it as a TOTP code does.
    assert (await sign_in(client, operator, operator.recovery_codes[0])).status_code == 303
    assert await factor_state(app) == (0, None)
    await sign_out(client)

    for _ in range(3):
        clock.advance(timedelta(hours=1))
        await codes_on_fresh_sign_in(client, operator, [wrong_code(operator, clock.now())] * 3)
    clock.advance(timedelta(hours=1))
    assert (await sign_in(client, operator, operator.code(clock.now()))).status_code == 303
    assert await factor_state(app) == (0, None)
    await sign_out(client)
    # So nine more are still not enough to lock it; a tenth in a row is.
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        await codes_on_fresh_sign_in(client, operator, [wrong_code(operator, clock.now())] * 3)
    assert await factor_state(app) == (9, None)
    [tenth] = await codes_on_fresh_sign_in(client, operator, ["zzzzz-zzzzz"])
    assert tenth.status_code == 403 and LOCKED in tenth.text


async def test_wrong_recovery_codes_and_replayed_codes_count_too(
    client: httpx.AsyncClient, app: Any, clock: Any, operator: Operator
) -> None:
    # The code that confirmed the factor, sent again: refused as used, and counted.
    [replay] = await codes_on_fresh_sign_in(client, operator, [operator.code(clock.now())])
    assert replay.status_code == 401 and "already used" in replay.text
    assert (await factor_state(app))[0] == 1
    statuses = []
    for n in range(3):
        clock.advance(timedelta(hours=1))
        answers = await codes_on_fresh_sign_in(client, operator, [f"wrong-guess{n}{i}" for i in range(3)])
        statuses += [a.status_code for a in answers]
    assert statuses == [401] * 8 + [403]
    failures, locked_at = await factor_state(app)
    assert failures == MAX_FAILURES and locked_at is not None
    # While locked, the key alone is refused (a good recovery code can't even be given), and none is spent.
    refused = await give_key(client, operator.token)
    assert refused.status_code == 403 and LOCKED in refused.text
    async with AsyncSession(app.state.engine) as db, db.begin():
        before = await unlock(db, await key_id(app))
    assert (before.failures, before.locked) == (MAX_FAILURES, True)
    used = await sign_in(client, operator, operator.recovery_codes[5])
    assert used.status_code == 303 and used.headers["location"] == "/admin?recovery_codes_left=9"


async def test_parallel_wrong_guesses_all_count_and_lock_once(
    client: httpx.AsyncClient, app: Any, clock: Any, operator: Operator
) -> None:
    """Ten pending sessions (ten browsers with the stolen key) guess at once: every guess counts, exactly one
    of them is the one that locks."""
    browsers = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g4g.test")
        for _ in range(MAX_FAILURES)
    ]
    try:
        forms = []
        for browser in browsers:
            assert (await give_key(browser, operator.token)).status_code == 303
            forms.append(await browser.get("/admin"))
        guess = wrong_code(operator, clock.now())
        answers = await asyncio.gather(
            *(
                browser.post("/admin/second-factor", data={"code": guess, "csrf_token": csrf_token(form)})
                for browser, form in zip(browsers, forms, strict=True)
            )
        )
    finally:
        for browser in browsers:
            await browser.aclose()
    assert sorted(a.status_code for a in answers) == [401] * 9 + [403]
    failures, locked_at = await factor_state(app)
    assert failures == MAX_FAILURES and locked_at is not None
    async with app.state.engine.connect() as db:
        counts = dict(
            (
                await db.execute(
                    text(
                        "SELECT action, count(*) FROM activity_entries"
                        " WHERE action LIKE 'admin_factor.%' GROUP BY action"
                    )
                )
            ).all()
        )
    assert counts == {"admin_factor.fail": MAX_FAILURES, "admin_factor.lock": 1}


async def test_no_code_token_or_secret_reaches_the_logs_or_the_activity_log(
    client: httpx.AsyncClient, app: Any, clock: Any, admin_token: str
) -> None:
    suite_log = conftest._suite_log
    assert suite_log is not None
    suite_log.flush()
    start = Path(suite_log.name).stat().st_size  # noqa: ASYNC240 (a local file, at once)
    operator = await enrol(client, admin_token, clock.now())
    await sign_out(client)
    tried = []
    for n in range(MAX_FAILURES // 2):
        clock.advance(timedelta(hours=1))
        near_miss = operator.recovery_codes[n][:-1] + ("a" if operator.recovery_codes[n][-1] != "a" else "b")
        guesses = [wrong_code(operator, clock.now()), near_miss]
        tried += guesses
        await codes_on_fresh_sign_in(client, operator, guesses)
    assert (await factor_state(app))[1] is not None  # locked on the way
    suite_log.flush()
    with Path(suite_log.name).open(encoding="utf-8") as log:  # noqa: ASYNC230
        log.seek(start)
        written = log.read()
    lines = [json.loads(line) for line in written.splitlines() if line.startswith("{")]
    assert {"admin_factor_failed", "admin_factor_locked"} <= {line["event"] for line in lines}
    async with app.state.engine.connect() as db:
        rows = (await db.execute(text("SELECT * FROM activity_entries"))).all()
    entries = json.dumps([list(map(str, row)) for row in rows])
    assert entries.count("admin_factor.fail") == MAX_FAILURES
    # Long secrets nowhere; six-digit codes tried never as a logged value (digits alone may occur in timestamps).
    for secret in [admin_token, admin_token[12:], operator.secret, *operator.recovery_codes, *tried[1::2]]:
        assert secret not in written, secret
        assert secret not in entries, secret
    values = {str(v) for line in lines for v in line.values()} | {str(v) for row in rows for v in row}
    for code in [*tried[::2], operator.code(START)]:
        assert code not in values and f'"{code}"' not in entries
