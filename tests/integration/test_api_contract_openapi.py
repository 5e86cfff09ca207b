"""The API's OpenAPI document tells the truth: schemathesis, which fuzzes an
API from its own document as a vendor's generated client would call it,
runs every check (``--checks all``) against a served app on a real Redis
filled from the bundled records and finds nothing. Its examples are bounded
(the run takes under a minute); the push stream (``/v1/stream``), which
never ends, is left out (``/v1/ws`` is no HTTP operation: the document has
no WebSocket); tests/integration/test_api.py covers both.

The token is a dispatch one: every GET route admits it; the admin routes
(PUT) refuse it with the 403 their document lists."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from streamer.core.cells import cell_hex, cell_of
from streamer.settings import BlendSettings
from tests import oracle
from tests.integration.test_api import DISPATCH, filled, serving, settings_for

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 25  # per operation and phase
SEED = 17


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=5000)


async def test_schemathesis_finds_nothing_against_the_served_api(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row], tmp_path: Path
) -> None:
    assert SCHEMATHESIS.exists(), (
        f"schemathesis (a dev dependency) is not installed: {SCHEMATHESIS}"
    )
    base = settings_for(namespace, redis_url)
    blend = BlendSettings(long="month", short="week", long_share=0.75)
    settings = base.model_copy(update={"blends": {"mix": blend}})
    await filled(settings, client, rows)
    # ids that name data, beside those schemathesis makes up (most name none: 404)
    cells = sorted({cell_hex(cell_of(r.lat, r.lon, res)) for r in rows[:3] for res in (8, 9, 10)})
    (tmp_path / "schemathesis.toml").write_text(
        f"""[dictionaries.cells]
values = {orjson.dumps(cells).decode()}

[dictionaries.blends]
values = ["mix"]

[[operations]]
include-path = "/v1/cells/{{cell}}"
parameters = {{ "path.cell" = {{ dictionary = "cells", probability = 0.5 }} }}

[[operations]]
include-path = "/v1/blends/{{name}}"
parameters = {{ "path.name" = {{ dictionary = "blends", probability = 0.5 }} }}
"""
    )
    async with serving(settings, client) as host:
        started = time.monotonic()
        run = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "run",
            f"http://{host}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--header",
            f"Authorization: Bearer {DISPATCH}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--exclude-path",
            "/v1/stream",
            "--workers",
            "1",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
        out, _ = await asyncio.wait_for(run.communicate(), 300)
        took_s = time.monotonic() - started
    report = out.decode(errors="replace")
    print(report[-2500:])  # (shown with -s, or when the test fails)
    assert run.returncode == 0, report[-20000:]
    counted = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counted and counted[1] == counted[2] and int(counted[1]) > 500, report[-3000:]
    assert took_s < 120, f"schemathesis took {took_s:.0f} s"
