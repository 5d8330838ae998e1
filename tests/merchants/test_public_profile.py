"""A merchant opts in to a public profile: a badge for its product pages (JSON and SVG, cacheable, in the reader's
language) and a page of its impact, with small counts hidden as in the public report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import assert_problem, bearer, create_key, create_platform
from tests.packages.conftest import Pool, open_pool


@pytest.fixture
async def pool(database_url: str, tmp_path: Path) -> AsyncIterator[Pool]:
    async with open_pool(database_url, tmp_path, transparency_refresh_seconds=0) as opened:
        yield opened


async def test_an_opted_in_merchant_has_a_badge_and_a_page(pool: Pool) -> None:
    client = pool.client
    tea, cake = await pool.merchant("tea"), await pool.merchant("cake")
    await pool.collect([(tea, "T-1", 12 * 500), (cake, "C-1", 3 * 500)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.school(["1"] * 15)
    assert (await pool.run(term="T1", package_kind_id=kind["id"]))["packages"] == 15

    badge_url = f"/v1/merchants/{tea['id']}/badge"
    assert_problem(await client.get(badge_url), 404, "not-found")  # not opted in: as unknown as a missing one
    key = bearer((await create_key(client, pool.admin, role="merchant", merchant_id=tea["id"]))["token"])
    opted = await client.patch(f"/v1/merchants/{tea['id']}", json={"public_profile": True}, headers=key)
    assert opted.status_code == 200, opted.text
    assert (opted.json()["public_profile"], opted.json()["public_slug"]) == (True, "tea-house")
    again = await client.patch(f"/v1/merchants/{tea['id']}", json={"public_profile": True}, headers=key)
    assert again.json() == opted.json()

    badge = await client.get(badge_url)
    assert badge.status_code == 200
    body = badge.json()
    # 12 packages, published as the public report publishes counts: rounded down to a multiple of five.
    assert body["text"] == "100% of this shop's sales buy school supplies; 10 Love Packages so far."
    assert (body["packages_funded"], body["countries"], body["page_url"]) == (10, ["NP"], "/m/tea-house")
    assert (
        badge.headers["cache-control"] == "public, max-age=600" and badge.headers["vary"] == "Accept-Language"
    )
    assert badge.headers["access-control-allow-origin"] == "*"
    cached = await client.get(badge_url, headers={"if-none-match": badge.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""

    chinese = await client.get(badge_url, headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert chinese.json()["language"] == "zh-Hans" and chinese.headers["etag"] != badge.headers["etag"]
    assert chinese.json()["text"] == "本店销售额的100%用于购买学习用品；迄今已资助10个爱心包。"
    indonesian = (await client.get(badge_url, params={"lang": "id"})).json()
    assert (
        indonesian["text"]
        == "100% dari penjualan toko ini membeli perlengkapan sekolah; 10 Paket Kasih sejauh ini."
    )
    svg = await client.get(f"{badge_url}.svg", params={"lang": "zh-Hans"})
    assert svg.headers["content-type"] == "image/svg+xml" and svg.text.startswith("<svg")
    assert "爱心包" in svg.text and 'lang="zh-Hans"' in svg.text

    page = await client.get("/m/tea-house")
    assert page.status_code == 200 and "Tea House" in page.text and "100% of this shop" in page.text
    assert "sales buy school supplies.</p>" in page.text
    # The sentence ends as the language ends sentences: 。in Chinese.
    chinese_page = (await client.get("/m/tea-house", headers={"accept-language": "zh-CN"})).text
    assert 'lang="zh-Hans"' in chinese_page and "。</p>" in chinese_page and ".</p>" not in chinese_page

    # The other merchant: three packages are a small count, shown as "<5" and not given exactly anywhere.
    cake_key = bearer(
        (await create_key(client, pool.admin, role="merchant", merchant_id=cake["id"]))["token"]
    )
    cake_slug = (
        await client.patch(f"/v1/merchants/{cake['id']}", json={"public_profile": True}, headers=cake_key)
    ).json()["public_slug"]
    assert cake_slug.startswith("tea-house-")  # the same name: made unique
    cake_badge = (await client.get(f"/v1/merchants/{cake['id']}/badge")).json()
    assert cake_badge["packages_funded"] == "<5"
    assert cake_badge["so_far"] == "fewer than 5 Love Packages so far"
    assert "&lt;5" in (await client.get(f"/m/{cake_slug}")).text

    # Opting out takes the badge and the page down; nobody else may opt a merchant in or out.
    rival = await create_platform(client, pool.admin, name="Rival")
    rival_key = bearer(
        (await create_key(client, pool.admin, role="platform", platform_id=rival["id"]))["token"]
    )
    patch = f"/v1/merchants/{tea['id']}"
    assert_problem(
        await client.patch(patch, json={"public_profile": False}, headers=rival_key), 404, "not-found"
    )
    assert_problem(
        await client.patch(patch, json={"public_profile": "yes"}, headers=key), 422, "invalid-request"
    )
    assert_problem(await client.patch(patch, json={}, headers=key), 422, "invalid-request")
    assert (await client.patch(patch, json={"public_profile": False}, headers=key)).status_code == 200
    assert_problem(await client.get(badge_url), 404, "not-found")
    assert (await client.get("/m/tea-house")).status_code == 404


async def test_a_merchant_that_funded_everything_tells_no_more_than_the_public_report(pool: Pool) -> None:
    # Five regions of four: the report shows each as "<5" and lowers the total to 15 (20 would say four each).
    # The one merchant funded all 20: its badge must not say 20 beside the report's 15.
    tea = await pool.merchant("tea")
    await pool.collect([(tea, "T-1", 20 * 500)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    for n in range(5):
        await pool.school(["1"] * 4, region=f"Region {n}")
    assert (await pool.run(term="T1", package_kind_id=kind["id"]))["packages"] == 20
    report = (await pool.client.get("/v1/transparency")).json()
    assert report["packages"]["allocated"] == 15
    assert {r["packages_allocated"] for r in report["regions"]} == {"<5"}

    key = bearer((await create_key(pool.client, pool.admin, role="merchant", merchant_id=tea["id"]))["token"])
    await pool.client.patch(f"/v1/merchants/{tea['id']}", json={"public_profile": True}, headers=key)
    badge = (await pool.client.get(f"/v1/merchants/{tea['id']}/badge")).json()
    assert badge["packages_funded"] == 15
    assert badge["countries"] == ["NP"]  # the report shows Nepal with 15
