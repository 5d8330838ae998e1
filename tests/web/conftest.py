from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio

from app.core.settings import Settings
from tests.conftest import make_settings

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


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


# ---- the browser tests: Debian's Chromium driven by Playwright, against a real `g4g serve` ----

CHROMIUM = os.environ.get("G4G_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FOUND = Path(CHROMIUM).exists()
# What this machine's Chromium needs headless as root with no network but loopback (and none of its own calls out).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_screenshots: list[Path] = []
_skipped_because: list[str] = []


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the whole run. Without one, the browser tests are skipped and the run says why —
    except where `G4G_REQUIRE_BROWSER` is set (CI), where that is a failure."""
    if not CHROMIUM_FOUND:
        reason = (
            f"browser tests skipped: no Chromium at {CHROMIUM} "
            "(install it with `apt-get install chromium`, or point G4G_CHROMIUM at one)"
        )
        if os.environ.get("G4G_REQUIRE_BROWSER"):
            pytest.fail(reason.replace("skipped", "required"))
        _skipped_because.append(reason)
        pytest.skip(reason)
    # The async API, on the suite's one event loop: Playwright's sync API would keep a loop of its own running
    # in this thread, and every async test after it would fail.
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "tests" / "web" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


# The table cells (with their text) that are drawn, but not wholly inside the viewport's width.
OFF_SCREEN_CELLS = """() => [...document.querySelectorAll("tbody th, tbody td, tfoot th, tfoot td")]
  .filter(cell => { const box = cell.getBoundingClientRect();
                    return box.width > 1 && (box.left < 0 || box.right > window.innerWidth + 0.5); })
  .map(cell => cell.textContent.trim())"""


async def screenshot(page: Page, folder: Path, name: str) -> None:
    """The page at desktop and phone width, whole length. At either width nothing may stick out sideways, so a
    phone never has to scroll the whole page left and right; on a phone every table's figures are on screen
    (its rows stacked as cards), not in a box that scrolls sideways."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)  # type: ignore[arg-type]
        page_width = await page.evaluate("document.documentElement.scrollWidth")
        assert page_width <= size["width"], f"{name} is {page_width}px wide at {label} width"
        if label == "phone":
            assert await page.evaluate(OFF_SCREEN_CELLS) == [], f"{name}: table figures off-screen on a phone"
        path = folder / f"{name}-{label}.png"
        await page.screenshot(path=str(path), full_page=True)
        _screenshots.append(path)
    await page.set_viewport_size(DESKTOP)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _report_screenshots(request: pytest.FixtureRequest) -> Iterator[None]:
    """Name the test's screenshots on its report, which pytest-xdist carries to the process that prints them (the
    top conftest lists them at the end of the run)."""
    taken = len(_screenshots)
    yield
    request.node.user_properties.extend(("screenshot", str(path)) for path in _screenshots[taken:])


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    for reason in sorted(set(_skipped_because)):
        terminalreporter.section("browser tests")
        terminalreporter.write_line(reason)
