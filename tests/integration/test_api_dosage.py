"""Patrol dosage over HTTP, against a real Redis and a real uvicorn: the plan
and briefing notes set by an admin token, refused to the others; a
16-minute foot patrol (pings every 10 s at a planned cell's centre, so its
true dwell is exactly 960 s) read back from ``/v1/dosage`` and the unit's
view; the officer's phone page in headless Chromium. Pings are written the
way the patrol worker writes them (``Dosage.add_pings`` + ``recompute``)."""

from __future__ import annotations

import asyncio
import time
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis
from selenium.webdriver.common.by import By

from streamer import app
from streamer.adapters.patrols import NOTE_MAX_CHARS, Dosage
from streamer.api import token_digest
from streamer.core.cells import cell_hex, cell_of, center_hex, neighbours_hex
from streamer.core.dosage import Ping
from streamer.settings import Settings, load_settings
from tests.integration.test_api import DISPATCH, DISPLAY, auth, serving
from tests.integration.test_display import ARTIFACTS, browser, until

ADMIN = "admin-secret"
SUPERVISOR = "sgt-lee"  # the admin token's name: the author of notes
UNIT, OTHER_UNIT = "car-7", "car-9"
RES = 10  # dosage.resolution by default: the grid resolution nearest 10
PATROL_CELL = cell_hex(cell_of(39.9524, -75.1636, RES))  # by City Hall, Philadelphia
_NEAR = sorted(neighbours_hex(PATROL_CELL))
OPEN_CELL = _NEAR[0]  # planned for every unit, not visited
OTHERS_CELL = _NEAR[3]  # planned for another unit only
PATROL_S = 960.0  # 16 minutes


def dosage_settings(namespace: str, redis_url: str, **dosage: Any) -> Settings:
    return load_settings(
        overrides={
            "store": {"namespace": namespace, "redis_url": redis_url},
            "grid": {"timezone": "America/New_York"},
            "time": {"clock": "wall"},
            "api": {
                "tokens": {
                    "wall": {"token_sha256": token_digest(DISPLAY), "role": "display"},
                    "cad": {"token_sha256": token_digest(DISPATCH), "role": "dispatch"},
                    SUPERVISOR: {"token_sha256": token_digest(ADMIN), "role": "admin"},
                },
                "heartbeat": "1s",
            },
            "dosage": dosage,
        }
    )


def list_plan() -> dict[str, Any]:
    return {
        "mode": "list",
        "cells": [
            {"cell": PATROL_CELL, "units": [UNIT]},
            {"cell": OPEN_CELL},
            {"cell": OTHERS_CELL, "units": [OTHER_UNIT]},
        ],
    }


async def patrol(dosage: Dosage) -> str:
    """A 16-minute foot patrol by ``UNIT`` in ``PATROL_CELL``, ending three
    minutes ago (or, just after local midnight, starting a minute after it):
    97 pings 10 s apart at the cell's centre. Returns the local day."""
    now_s = time.time()
    today = dosage.day_of(now_s)
    start_s = now_s - 180.0 - PATROL_S
    if dosage.day_of(start_s) != today:
        midnight = datetime.combine(date.fromisoformat(today), datetime.min.time(), dosage.tz)
        start_s = midnight.timestamp() + 60.0
    lat, lon = center_hex(PATROL_CELL)
    pings = [Ping(UNIT, start_s + 10.0 * i, lat, lon, "patrol") for i in range(97)]
    assert pings[-1].at_s - pings[0].at_s == PATROL_S
    await dosage.recompute(await dosage.add_pings(pings))
    return today


def row_of(summary: dict[str, Any], cell: str) -> dict[str, Any]:
    rows = [r for r in summary["cells"] if r["cell"] == cell]
    assert len(rows) == 1, (cell, summary["cells"])
    return rows[0]


async def test_plan_notes_and_dosage_over_http(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = dosage_settings(namespace, redis_url)
    assert settings.dosage.resolution == RES
    dosage = Dosage(app.store(settings, client), settings)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        # the plan: an admin's to set; display and dispatch tokens are refused
        plan = list_plan()
        assert (await h.put("/v1/dosage/plan", json=plan)).status_code == 401
        assert (await h.put("/v1/dosage/plan", json=plan, headers=auth("wrong"))).status_code == 401
        for token in (DISPLAY, DISPATCH):
            refused = await h.put("/v1/dosage/plan", json=plan, headers=auth(token))
            assert refused.status_code == 403, token
        coarse = cell_hex(cell_of(39.9524, -75.1636, 9))
        for bad, said in (
            ({"mode": "list", "cells": [{"cell": "not-a-cell"}]}, "not a cell of resolution 10"),
            ({"mode": "list", "cells": [{"cell": coarse}]}, "not a cell of resolution 10"),
            ({"mode": "list", "cells": []}, "a list plan needs"),
            ({"mode": "some"}, "'mode' is"),
        ):
            got = await h.put("/v1/dosage/plan", json=bad, headers=auth(ADMIN))
            assert got.status_code == 422 and said in got.text, got.text
        assert (await h.put("/v1/dosage/plan", json=[1], headers=auth(ADMIN))).status_code == 422
        assert (await h.get("/v1/dosage/plan", headers=auth(DISPLAY))).json()["mode"] == "top"
        set_ = await h.put("/v1/dosage/plan", json=plan, headers=auth(ADMIN))
        assert set_.status_code == 200, set_.text
        got_plan = (await h.get("/v1/dosage/plan", headers=auth(DISPLAY))).json()
        assert got_plan["mode"] == "list"
        assert [c["cell"] for c in got_plan["cells"]] == [PATROL_CELL, OPEN_CELL, OTHERS_CELL]

        for bad_day in ("2025-13-01", "2025-02-30", "20250314", "yesterday", "2025-3-1"):
            got = await h.get("/v1/dosage", params={"date": bad_day}, headers=auth(DISPLAY))
            assert got.status_code == 422 and "YYYY-MM-DD" in got.text, bad_day
            got = await h.get(f"/v1/dosage/unit/{UNIT}?date={bad_day}", headers=auth(DISPLAY))
            assert got.status_code == 422, bad_day

        today = await patrol(dosage)
        summary = (await h.get("/v1/dosage", headers=auth(DISPLAY))).json()
        assert summary["date"] == today and summary["resolution"] == RES
        assert (summary["covered"], summary["planned"]) == (1, 3)
        assert summary["units"] == {UNIT: 16.0}
        done = row_of(summary, PATROL_CELL)
        assert (done["visits"], done["minutes"], done["koper_visits"]) == (1, 16.0, 1)
        assert done["compliant"] is True and done["units"] == {UNIT: 16.0}
        assert done["last_visit_at"] is not None and done["days_since_last_visit"] is not None
        assert done["polygon"][0] == done["polygon"][-1] and len(done["polygon"]) == 7
        for cell in (OPEN_CELL, OTHERS_CELL):
            open_ = row_of(summary, cell)
            assert (open_["visits"], open_["minutes"], open_["compliant"]) == (0, 0.0, False)
            assert open_["last_visit_at"] is None
        # the same day asked for by name; the day before holds no visit
        named = (await h.get("/v1/dosage", params={"date": today}, headers=auth(DISPLAY))).json()
        assert row_of(named, PATROL_CELL)["minutes"] == 16.0
        before = (date.fromisoformat(today) - timedelta(days=1)).isoformat()
        earlier = (await h.get("/v1/dosage", params={"date": before}, headers=auth(DISPLAY))).json()
        assert earlier["date"] == before and row_of(earlier, PATROL_CELL)["visits"] == 0

        # briefing notes: written by an admin, signed with its token's name
        text = "Corner store: loitering after 20:00. Talk to the manager; check the alley."
        path = f"/v1/dosage/notes/{PATROL_CELL}"
        assert (await h.put(path, json={"text": text}, headers=auth(DISPLAY))).status_code == 403
        assert (await h.put(path, json={"text": text})).status_code == 401
        wrote = await h.put(path, json={"text": text}, headers=auth(ADMIN))
        assert wrote.status_code == 200, wrote.text
        assert wrote.json()["author"] == SUPERVISOR and wrote.json()["cell"] == PATROL_CELL
        for cell, body in (
            ("8a2a1072b59ffff-x", {"text": "x"}),
            (PATROL_CELL, {"text": "x" * (NOTE_MAX_CHARS + 1)}),
            (PATROL_CELL, {"words": "x"}),
        ):
            got = await h.put(f"/v1/dosage/notes/{cell}", json=body, headers=auth(ADMIN))
            assert got.status_code == 422, (cell, got.text)
        notes = (await h.get("/v1/dosage/notes", headers=auth(DISPLAY))).json()["notes"]
        assert notes == {PATROL_CELL: {**notes[PATROL_CELL], "text": text, "author": SUPERVISOR}}
        summary = (await h.get("/v1/dosage", headers=auth(DISPLAY))).json()
        assert row_of(summary, PATROL_CELL)["note"]["text"] == text

        # the unit's view: its own cells and the cells tasked to no one
        mine = (await h.get(f"/v1/dosage/unit/{UNIT}", headers=auth(DISPLAY))).json()
        assert (mine["unit"], mine["date"]) == (UNIT, today)
        tasks = {t["cell"]: t for t in mine["tasks"]}
        assert list(tasks) == [PATROL_CELL, OPEN_CELL]
        assert (
            tasks[PATROL_CELL]["minutes_by_you"] == 16.0 and tasks[PATROL_CELL]["minutes"] == 16.0
        )
        assert tasks[PATROL_CELL]["compliant"] is True and tasks[OPEN_CELL]["compliant"] is False
        assert tasks[PATROL_CELL]["note"]["text"] == text and tasks[OPEN_CELL]["note"] is None
        assert len(tasks[OPEN_CELL]["polygon"]) == 7
        theirs = (await h.get(f"/v1/dosage/unit/{OTHER_UNIT}", headers=auth(DISPLAY))).json()
        assert [(t["cell"], t["minutes_by_you"]) for t in theirs["tasks"]] == [
            (OPEN_CELL, 0.0),
            (OTHERS_CELL, 0.0),
        ]

        # an empty note removes it
        assert (await h.put(path, json={"text": " "}, headers=auth(ADMIN))).status_code == 200
        assert (await h.get("/v1/dosage/notes", headers=auth(DISPLAY))).json() == {"notes": {}}


async def test_dosage_routes_answer_404_when_dosage_is_off(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = dosage_settings(namespace, redis_url, enabled=False)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        for method, path, token in (
            ("GET", "/v1/dosage", DISPLAY),
            ("GET", "/v1/dosage/plan", DISPLAY),
            ("PUT", "/v1/dosage/plan", ADMIN),
            ("GET", "/v1/dosage/notes", DISPLAY),
            ("PUT", f"/v1/dosage/notes/{PATROL_CELL}", ADMIN),
            ("GET", f"/v1/dosage/unit/{UNIT}", DISPLAY),
        ):
            body = {"text": "x"} if "notes/" in path else list_plan()
            kwargs: dict[str, Any] = {"json": body} if method == "PUT" else {}
            got = await h.request(method, path, headers=auth(token), **kwargs)
            assert got.status_code == 404, (path, got.text)
            assert "dosage.enabled = false" in got.json()["detail"]
            # the token is checked first: without one, nothing is said
            assert (await h.request(method, path, **kwargs)).status_code == 401
        # and the rest of the API is there
        assert (await h.get("/v1/config", headers=auth(DISPLAY))).status_code == 200


async def test_the_officer_page_shows_the_units_tasks_on_a_phone(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = dosage_settings(namespace, redis_url)
    dosage = Dosage(app.store(settings, client), settings)
    await dosage.set_plan(list_plan(), time.time())
    await patrol(dosage)
    note = "Dealing from the bus shelter, evenings. Stand at the shelter."
    await dosage.set_note(PATROL_CELL, note, SUPERVISOR, time.time())
    driver = await asyncio.to_thread(browser)
    try:
        await asyncio.to_thread(driver.set_window_size, 412, 915)  # a phone, upright
        async with serving(settings, client) as host:
            await asyncio.to_thread(
                driver.get, f"http://{host}/officer?token={DISPLAY}&unit={UNIT}"
            )

            def state() -> dict[str, Any]:
                got = driver.execute_script("return window.hotspotsOfficer || null")
                return dict(got) if got else {}

            def tasks() -> dict[str, Any]:
                cards = driver.find_elements(By.CSS_SELECTOR, '[data-testid="task"]')
                return {c.get_attribute("data-cell"): c for c in cards}

            await until(lambda: state().get("loads", 0) >= 1, 15, "the unit's tasks loaded")
            shown = tasks()
            assert list(shown) == [PATROL_CELL, OPEN_CELL]
            done = shown[PATROL_CELL]
            minutes = done.find_element(By.CSS_SELECTOR, '[data-testid="task-minutes"]').text
            assert minutes == "16 min by you · 16 min by all units today", minutes
            assert "Dose met" in done.text and "Last visit today" in done.text
            said = done.find_element(By.CSS_SELECTOR, '[data-testid="task-note"]').text
            assert note in said and SUPERVISOR in said
            open_ = shown[OPEN_CELL]
            assert open_.find_element(By.CSS_SELECTOR, '[data-testid="task-minutes"]').text == (
                "0 min by you · 0 min by all units today"
            )
            assert "Not yet" in open_.text and "Needed: 1 visit of 15 min" in open_.text
            assert "No briefing note" in open_.text
            unit = driver.find_element(By.CSS_SELECTOR, '[data-testid="officer-unit"]')
            assert unit.get_attribute("value") == UNIT
            hexes = driver.find_elements(By.CSS_SELECTOR, '[data-testid="task-hex"]')
            assert sorted(h.get_attribute("data-cell") for h in hexes) == sorted(shown)
            # fits the phone: nothing wider than the screen
            width = driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert width[0] <= width[1], width
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "officer.png"))

            # the unit is remembered: the bare address shows the same tasks
            await asyncio.to_thread(driver.get, f"http://{host}/officer?token={DISPLAY}")
            await until(lambda: state().get("loads", 0) >= 1, 15, "the remembered unit's tasks")
            assert state()["unit"] == UNIT and list(tasks()) == [PATROL_CELL, OPEN_CELL]
            await asyncio.to_thread(driver.get, "about:blank")
    finally:
        await asyncio.to_thread(driver.quit)


async def test_the_officer_page_is_served_without_a_token(
    client: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    settings = dosage_settings(namespace, redis_url)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        for path in ("/officer", "/static/officer.js", "/static/officer.css"):
            got = await h.get(path)
            assert got.status_code == 200 and got.headers["cache-control"] == "no-cache", path
        assert 'data-testid="officer-unit"' in (await h.get("/officer")).text
