"""Love Packages in the public report (counts in bands of five, so no small one can be worked out) and a merchant's
impact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_problem, bearer, create_key
from tests.packages.conftest import Pool, open_pool


@pytest.fixture
async def reported(database_url: str, tmp_path: Path) -> AsyncIterator[Pool]:
    async with open_pool(database_url, tmp_path, transparency_refresh_seconds=0) as opened:
        yield opened


def _banded(count: Any) -> bool:
    return count == "<5" or (isinstance(count, int) and count >= 5 and count % 5 == 0)


async def test_packages_by_country_and_region_with_small_counts_hidden(reported: Pool) -> None:
    shop = await reported.merchant()
    await reported.collect([(shop, "O-1", 12 * 500)])
    kind = await reported.kind(countries=["NP", "KH"], unit_cost={"amount": 500, "currency": "USD"})
    await reported.school(["1"] * 5, region="Bagmati")
    await reported.school(["1"] * 3, region="Gandaki")
    await reported.school(["1"] * 4, country="KH", region="Phnom Penh")
    run = await reported.run(term="T1", package_kind_id=kind["id"])
    assert run["packages"] == 12

    report = (await reported.client.get("/v1/transparency")).json()
    packages = report["packages"]
    # Counts are published in bands of five: 12 packages read as 10 (10 to 19 for a total), none as "<5".
    assert (
        packages["allocated"] == 10 and packages["delivered"] == "<5" and packages["students_reached"] == "<5"
    )
    assert packages["cost_per_package"] == {"amount": 500, "currency": "USD"}
    # Money in packages is rounded like the count it is worth: 12 packages of 500 show as 10 packages' worth.
    assert packages["money_step"] == {"amount": 2500, "currency": "USD"}
    assert packages["in_packages"]["amount"] == packages["in_transit"]["amount"] == 5000
    assert report["reached_pool"]["amount"] - report["pool_balance"]["amount"] == 5000
    assert report["delivery_funnel"][0] == {"step": "allocated", "packages": 10}
    countries = {c["country"]: c for c in report["countries"]}
    # KH has 4: "<5"; NP's 8 shows as 5 (5 to 14 as a country's total), so 10 - 5 says nothing exact of KH.
    assert countries["KH"]["packages_allocated"] == "<5" and countries["NP"]["packages_allocated"] == 5
    regions = {(r["country"], r["region"]): r["packages_allocated"] for r in report["regions"]}
    assert regions == {("KH", "Phnom Penh"): "<5", ("NP", "Bagmati"): 5, ("NP", "Gandaki"): "<5"}
    for row in report["countries"] + report["regions"]:
        assert all(_banded(row[k]) for k in ("packages_allocated", "packages_delivered", "students_reached"))
    assert "stu_" not in str(report)


async def test_a_merchants_impact_counts_its_share_of_each_package(reported: Pool) -> None:
    tea, cake = await reported.merchant("tea"), await reported.merchant("cake")
    await reported.collect([(tea, "T-1", 750), (cake, "C-1", 250)])
    kind = await reported.kind(unit_cost={"amount": 500, "currency": "USD"})
    await reported.school(["1", "2"])
    await reported.run(term="T1", package_kind_id=kind["id"])  # 2 packages: T-1 500 | T-1 250 + C-1 250
    key = bearer(
        (await create_key(reported.client, reported.admin, role="merchant", merchant_id=tea["id"]))["token"]
    )
    impact = (await reported.client.get(f"/v1/merchants/{tea['id']}/impact", headers=key)).json()
    assert impact["packages_funded"] == "1.50"
    assert impact["reached_pool"] == {"amount": 750, "currency": "USD"}
    assert impact["in_packages"] == {"amount": 750, "currency": "USD"}
    assert impact["reached_schools"]["amount"] == 0 and impact["reached_schools_share_bps"] == 0
    assert impact["by_country"] == [{"country": "NP", "packages_funded": "1.50", "packages_delivered": 0}]
    [usd] = impact["money_by_stage"]
    assert usd["collected"] == 750 and usd["pledged"] == 0
    assert impact["raised"] == [{"amount": 750, "currency": "USD"}]
    cake_impact = (
        await reported.client.get(f"/v1/merchants/{cake['id']}/impact", headers=reported.admin)
    ).json()
    assert cake_impact["packages_funded"] == "0.50"

    # A period with none of its orders, another merchant's impact, a backwards period.
    empty = await reported.client.get(
        f"/v1/merchants/{tea['id']}/impact", params={"to": "2020-01-01T00:00:00Z"}, headers=key
    )
    assert empty.json()["packages_funded"] == "0.00" and empty.json()["orders"] == 0
    assert_problem(
        await reported.client.get(f"/v1/merchants/{cake['id']}/impact", headers=key), 404, "not-found"
    )
    assert_problem(
        await reported.client.get(
            f"/v1/merchants/{tea['id']}/impact",
            params={"from": "2027-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            headers=key,
        ),
        422,
        "invalid-request",
    )
