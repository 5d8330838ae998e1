"""A refused field says in words what it must be: never a regular expression."""

from __future__ import annotations

import re
from typing import Any

import httpx

from app.core.patterns import FALLBACK, SENTENCES
from app.main import create_app


def _patterns(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return found.union(*(_patterns(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_patterns(value) for value in node))
    return set()


def test_every_pattern_the_api_publishes_has_a_sentence() -> None:
    published = _patterns(create_app().openapi())
    assert len(published) >= 10
    assert published <= set(SENTENCES), sorted(published - set(SENTENCES))


def _messages(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert not re.search(r"\^|\$|\\x|\[", body["detail"]), body["detail"]
    return {".".join(str(part) for part in e["loc"]): e["msg"] for e in body["errors"]}


async def test_an_http_evidence_url_is_refused_in_words(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    event = {
        "event_id": "HX-1",
        "status": "delivered",
        "occurred_at": "2026-12-05T10:42:00Z",
        "proof": {
            "receiver_name": "Sita Sharma",
            "receiver_role": "teacher",
            "evidence": {"url": "http://pod.example.org/1.jpg", "sha256": "not-a-hash"},
        },
    }
    messages = _messages(await client.post("/v1/shipments/shp_1/events", json=event, headers=admin))
    assert messages["body.delivered.proof.evidence.url"] == (
        "must be an https:// address with a host name, no user name or password, and no spaces"
    )
    assert messages["body.delivered.proof.evidence.sha256"] == "must be a SHA-256: 64 hexadecimal digits"


async def test_a_country_and_an_id_are_refused_in_words(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    merchant = {"external_id": "tea shop", "name": "Tea", "country": "np", "platform_id": "plt 1"}
    messages = _messages(await client.post("/v1/merchants", json=merchant, headers=admin))
    assert messages["body.country"] == "must be two capital letters (ISO 3166-1 alpha-2)"
    assert messages["body.external_id"] == "must be printable ASCII characters, without spaces"
    assert messages["body.platform_id"] == "must be one of our ids, such as mer_01J…"
    assert FALLBACK not in messages.values()
