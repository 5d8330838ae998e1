from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from app.core.settings import Settings
from tests.conftest import make_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """As everywhere, with the public report recomputed on every read."""
    return make_settings(database_url, tmp_path, transparency_refresh_seconds=0)


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, api_key: str) -> httpx.Response:
    form = await client.get("/merchant")
    return await client.post("/merchant/sign-in", data={"api_key": api_key, "csrf_token": csrf_token(form)})
