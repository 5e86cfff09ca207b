"""The wall display end to end, in headless Chromium (Debian's chromium and
chromium-driver): the real broker, a worker, the publisher, the API server
and the page. Hexagons render; an event published to Kafka changes the page
within seconds; a gap in the updates makes it re-sync; the stale warning
appears when updates stop; an alert notice shows in the ticker at once and
goes when cleared. Screenshots are saved to ``test-artifacts/``
(``HOTSPOTS_ARTIFACTS`` to move it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from streamer import app
from streamer.adapters.publisher import Publisher, channel
from streamer.adapters.store import EngineClock
from streamer.api import token_digest
from streamer.local.broker import LocalBroker
from tests import oracle
from tests.integration.test_api import DISPLAY, alert_at, serving, write_notice
from tests.integration.test_api import settings_for as api_settings_for
from tests.pipeline_support import (
    consumer_for,
    publish,
    redis_key,
    running,
    settings_for,
    wait_applied,
)

ARTIFACTS = Path(os.environ.get("HOTSPOTS_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))


def browser() -> webdriver.Chrome:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "headless display tests need Debian's chromium and chromium-driver "
            "(`apt-get install chromium chromium-driver`; .ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1920,1080",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@contextlib.asynccontextmanager
async def publishing(publisher: Publisher, clock: EngineClock) -> AsyncIterator[None]:
    """The leader's publication timer, every 0.2 s."""

    async def loop() -> None:
        while True:
            await clock.refresh()
            await publisher.tick()
            await asyncio.sleep(0.2)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"within {timeout_s} s: {what}")


async def test_the_wall_display_renders_updates_and_warns_when_stale(
    broker: LocalBroker, client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    rows = oracle.read_rows(oracle.SAMPLE, limit=3000)
    settings = settings_for(
        namespace,
        broker.bootstrap,
        redis_url,
        api={
            "tokens": {"wall": {"token_sha256": token_digest(DISPLAY), "role": "display"}},
            "stale_after": "3s",
            "heartbeat": "1s",
        },
    )
    k = settings.kafka
    app.ensure_topics(settings)
    worker = consumer_for(settings, client)
    store = worker.store
    clock = EngineClock(store, settings.time.clock)
    publisher = Publisher(store, settings.publish.top_n, clock)
    driver = await asyncio.to_thread(browser)
    try:
        async with running(worker), serving(settings, client) as host:
            first = publish(k.bootstrap, k.incidents_topic, [("upsert", r) for r in rows[:2500]])
            await wait_applied(store, first.last_offsets)
            async with publishing(publisher, clock):
                await asyncio.to_thread(driver.get, f"http://{host}/?token={DISPLAY}")

                def state() -> dict[str, Any]:
                    got = driver.execute_script("return window.hotspotsDisplay || null")
                    return dict(got) if got else {}

                await until(lambda: state().get("hexCount", 0) > 0, 30, "hexagons drawn")
                hexes = driver.find_elements(By.CSS_SELECTOR, '[data-testid="hex"]')
                assert len(hexes) >= 10
                assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="ranked-list"] *')
                banner = driver.find_element(By.CSS_SELECTOR, '[data-testid="stale-banner"]')
                assert not banner.is_displayed()
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "display.png"))

                before = int(state()["sequence"])
                # one more burst of real events: the page follows within seconds
                more = publish(k.bootstrap, k.incidents_topic, [("upsert", r) for r in rows[2500:]])
                await wait_applied(store, more.last_offsets)
                await until(lambda: int(state().get("sequence", 0)) > before, 15, "page updated")
                shown = driver.find_element(By.CSS_SELECTOR, '[data-testid="sequence"]').text
                assert int(shown) > before

                # a gap (an update that does not follow the last one seen)
                # makes the page re-sync from a fresh snapshot
                await asyncio.sleep(1.0)  # the publisher's last ticks for the burst
                last = int(await client.hget(redis_key(store, "published"), "seq") or 0)
                await until(lambda: state().get("sequence") == last, 10, "page settled")
                snapshots = int(state()["snapshots"])
                bogus = {"seq": 10**9, "previous": -1, "at": 0.0, "lists": {}}
                await client.publish(channel(store), orjson.dumps(bogus))
                await until(lambda: int(state()["snapshots"]) > snapshots, 15, "re-synced")
                await until(lambda: state().get("sequence") == last, 10, "snapshot's seq")
            # the publisher stopped: heartbeats stop moving the data; after
            # api.stale_after the warning shows
            await until(
                lambda: driver.find_element(
                    By.CSS_SELECTOR, '[data-testid="stale-banner"]'
                ).is_displayed(),
                20,
                "stale warning shown",
            )
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "display-stale.png"))
    finally:
        await asyncio.to_thread(driver.quit)


async def test_the_alert_ticker_follows_notices_live(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = api_settings_for(namespace, redis_url)
    store = app.store(settings, client)
    # the engine's clock (time.clock = "event") stands at 22:00 UTC
    await client.hset(redis_key(store, "meta"), "watermark", 1741989600.0)
    driver = await asyncio.to_thread(browser)
    try:
        async with serving(settings, client) as host:
            await asyncio.to_thread(driver.get, f"http://{host}/?token={DISPLAY}")

            def state() -> dict[str, Any]:
                got = driver.execute_script("return window.hotspotsDisplay || null")
                return dict(got) if got else {}

            def items() -> list[Any]:
                return list(driver.find_elements(By.CSS_SELECTOR, '[data-testid="alert-item"]'))

            await until(lambda: state().get("snapshots", 0) >= 1, 15, "the first snapshot")
            assert state()["alerts"] == 0 and not items()

            opened = alert_at("A-20250314-0007", "opened", 48, pattern="intensifying")
            await write_notice(client, settings, opened)
            shown = await until(items, 5, "the alert in the ticker")
            assert [e.get_attribute("data-alert-id") for e in shown] == [opened["id"]]
            text = shown[0].text
            for part in ("HIGH", opened["title"], "Intensifying hot spot", "12 min ago"):
                assert part in text, (part, text)
            assert state()["alerts"] == 1 and state()["lastAlertId"] == opened["id"]
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "display-alert.png"))

            await write_notice(client, settings, alert_at(opened["id"], "cleared", 55))
            await until(lambda: not items(), 5, "the cleared alert gone from the ticker")
            assert state()["alerts"] == 0
            ticker = driver.find_element(By.CSS_SELECTOR, '[data-testid="alerts"]').text
            assert "No open alerts" in ticker
            # (the page's stream closed first: the server need not wait it out)
            await asyncio.to_thread(driver.get, "about:blank")
    finally:
        await asyncio.to_thread(driver.quit)


async def test_the_wall_display_outlines_planned_patrols_and_counts_coverage(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    # (here, not at the top: that module takes browser() and until() from this one)
    from streamer.adapters.patrols import Dosage
    from tests.integration.test_api_dosage import (
        OPEN_CELL,
        OTHERS_CELL,
        PATROL_CELL,
        dosage_settings,
        list_plan,
        patrol,
    )

    settings = dosage_settings(namespace, redis_url)
    dosage = Dosage(app.store(settings, client), settings)
    await dosage.set_plan(list_plan(), time.time())
    await patrol(dosage)  # a 16-minute foot patrol in PATROL_CELL, today
    driver = await asyncio.to_thread(browser)
    try:
        async with serving(settings, client) as host:
            await asyncio.to_thread(driver.get, f"http://{host}/?token={DISPLAY}")

            def state() -> dict[str, Any]:
                got = driver.execute_script("return window.hotspotsDisplay || null")
                return dict(got) if got else {}

            await until(lambda: state().get("coverage"), 15, "the patrol coverage")
            assert state()["coverage"]["covered"] == 1 and state()["coverage"]["planned"] == 3
            figure = driver.find_element(By.CSS_SELECTOR, '[data-testid="coverage"]')
            assert figure.is_displayed() and "Patrols: 1/3 covered today" in figure.text
            await until(lambda: state().get("plannedCells") == 3, 15, "the planned cells drawn")
            outlines = driver.find_elements(By.CSS_SELECTOR, '[data-testid="planned-cell"]')
            covered = {
                e.get_attribute("data-cell"): e.get_attribute("data-covered") for e in outlines
            }
            assert covered == {PATROL_CELL: "true", OPEN_CELL: "false", OTHERS_CELL: "false"}
            dashes = {
                e.get_attribute("data-cell"): e.value_of_css_property("stroke-dasharray")
                for e in outlines
            }
            assert dashes[PATROL_CELL] == "none" and dashes[OPEN_CELL] != "none", dashes
            # (no events: the outlines stand alone, with no score hexagons under them)
            assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="hex"]')
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "display-patrols.png"))
            await asyncio.to_thread(driver.get, "about:blank")
    finally:
        await asyncio.to_thread(driver.quit)
