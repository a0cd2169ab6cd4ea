"""GET /dashboard in a real headless Chromium against a live edge and worker: the numbers shown are
/v1/status's, the page refreshes itself, and a screenshot lands in artifacts/dashboard.png.

Chromium is Debian's ``chromium`` (``make install`` installs it where it can). Without one the
test fails, saying so; ``COHORTSYNC_TEST_NO_BROWSER=1`` skips it on purpose.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from schemas.settings import Settings
from tests.ingest.browser import Page, chromium, find_chromium
from tests.support.edge import Client, create_key, running_edge
from tests.support.status import post_changes, running_worker, wait_until
from tests.support.worker import new_audience

SCREENSHOT = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard.png"
# Enough to watch progress: the smallest audience is done after a few seconds.
RATE_PER_MINUTE = 1200

# Everything the page shows, as the data attributes it renders them with.
READ_PAGE = """(() => {
  const cells = (root) => Object.fromEntries([...root.querySelectorAll('[data-field]')]
      .filter((el) => root !== document || !el.closest('#audiences'))
      .map((el) => [el.dataset.field, {value: el.dataset.value, text: el.textContent}]));
  return {
    state: document.body.dataset.state,
    updates: Number(document.body.dataset.updates),
    hash: location.hash,
    fields: cells(document),
    audiences: [...document.querySelectorAll('#audiences tr')].map((tr) => ({
      id: Number(tr.dataset.audience),
      name: tr.querySelector('.name').textContent,
      cells: cells(tr),
    })),
    chartLines: document.querySelectorAll('#chart polyline').length,
  };
})()"""


@pytest.fixture
def browser() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("COHORTSYNC_TEST_NO_BROWSER") == "1":
            pytest.skip("COHORTSYNC_TEST_NO_BROWSER=1")
        pytest.fail(
            "no Chromium found for the dashboard test: install Debian's chromium (make install "
            "does, as root), set COHORTSYNC_TEST_CHROMIUM to a Chrome binary, or skip it with "
            "COHORTSYNC_TEST_NO_BROWSER=1"
        )
    return found


async def read_page(page: Page) -> dict[str, Any]:
    shown: dict[str, Any] = await page.evaluate(READ_PAGE)
    return shown


def number(raw: str) -> float | None:
    return None if raw == "" else float(raw)


def assert_shows(shown: dict[str, Any], status: dict[str, Any]) -> None:
    """Every number on the page is the one /v1/status gave."""
    fields = shown["fields"]
    expected: dict[str, Any] = {
        **status["queueDepth"],
        "workersLive": status["workersLive"],
        "etaSeconds": status["etaSeconds"],
        **status["rate"],
    }
    assert {name: number(fields[name]["value"]) for name in expected} == expected
    for name in ("backlog", "ready", "inFlight", "deferred", "measuredPerMinute"):
        assert fields[name]["text"] == f"{expected[name]:,}"
    rows = [
        {
            "id": row["id"],
            "name": row["name"],
            **{name: number(cell["value"]) for name, cell in row["cells"].items()},
        }
        for row in shown["audiences"]
    ]
    assert rows == status["audiences"]


async def test_dashboard_shows_status_and_refreshes(
    browser: str,
    settings: Settings,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
) -> None:
    live = settings.with_changes(rate_limit_per_minute=RATE_PER_MINUTE)
    _, key = await create_key(db, scope="read")
    _, writer = await create_key(db)
    binge = await new_audience(db, "Binge watchers")
    weekend = await new_audience(db, "Weekend shoppers")
    vip = await new_audience(db, "<b>VIP</b> & friends")
    async with running_edge(live, writer) as client, chromium(browser) as page:
        await post_changes(client, [(binge, "add", f"b{i}") for i in range(400)])
        await post_changes(client, [(weekend, "add", f"w{i}") for i in range(120)])
        await post_changes(client, [(vip, "add", f"v{i}") for i in range(30)])
        url = str(client.make_url("/dashboard"))

        await page.navigate(f"{url}#key=cs_not_a_key")
        await wait_for(page, "document.body.dataset.state === 'nokey'", "the key form")
        refused = await page.evaluate("document.getElementById('keyerror').textContent")
        assert refused == "That key was refused."

        async with running_worker(live, redis):
            await page.navigate(f"{url}#key={key}")
            await wait_for(page, "document.body.dataset.state === 'ok'", "the first status")
            # The key leaves the address bar at once; the page keeps it in its tab.
            assert (await read_page(page))["hash"] == ""
            await wait_for(
                page,
                "Number(document.body.dataset.updates) >= 4 && document.querySelector("
                "'#audiences tr.done') !== null",
                "progress: an audience done",
            )
            during = await read_page(page)
            assert during["fields"]["workersLive"]["value"] == "1"
            assert during["chartLines"] == 2
            await page.screenshot(SCREENSHOT)

        # The worker is gone: nothing moves any more, so the page and /v1/status must agree,
        # once the jobs it queued at their rate slots (up to the dispatch horizon) are due.
        await wait_for(page, "document.body.dataset.state === 'ok'", "a status")

        async def all_due() -> bool:
            depth = (await get_json(client, "/v1/status"))["queueDepth"]
            return bool(depth["deferred"] == 0)

        await wait_until(all_due, "the jobs queued ahead due")
        await asyncio.sleep(1.1)  # the last applied second is over, so the measured rate holds
        status = await get_json(client, "/v1/status")
        seen = (await read_page(page))["updates"]
        await wait_for(
            page, f"Number(document.body.dataset.updates) >= {seen + 2}", "two more refreshes"
        )
        shown = await read_page(page)
        assert await get_json(client, "/v1/status") == status
        assert status["workersLive"] == 0
        assert_shows(shown, status)
        names = [row["name"] for row in shown["audiences"]]
        assert "<b>VIP</b> & friends" in names  # shown as text, never as markup
        assert status["audiences"][0]["pending"] > 0
        warning = await page.evaluate("document.getElementById('banner').textContent")
        assert warning.startswith("No worker replica is alive")
        await page.screenshot(SCREENSHOT.with_name("dashboard-no-workers.png"))
    assert page.problems() == []
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG")


async def test_dashboard_page_is_self_contained(settings: Settings, redis: aioredis.Redis) -> None:
    async with running_edge(settings) as client:
        response = await client.get("/dashboard")
        assert response.status == 200
        html = await response.text()
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    # No script, style sheet or font from anywhere else.
    for external in ("<script src", '<link rel="stylesheet"', "@import", "url(http", "//fonts."):
        assert external not in html


async def wait_for(page: Page, condition: str, what: str) -> None:
    # While a page loads its body may not exist yet: that is "not yet", not a failure.
    guarded = f"(() => {{ try {{ return Boolean({condition}); }} catch {{ return false; }} }})()"

    async def holds() -> bool:
        return bool(await page.evaluate(guarded))

    await wait_until(holds, what)


async def get_json(client: Client, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body
