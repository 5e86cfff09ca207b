"""Blended rankings (``[blends.NAME]``): the store's read-time blend of two
horizons against an oracle computed from the raw rows, through the API and
the publisher; and their configuration checks."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from streamer import app
from streamer.adapters.publisher import Publisher
from streamer.analysis.evaluate import engine_config
from streamer.core.accuracy import Blend
from streamer.settings import ConfigError, Settings, load_settings
from tests import oracle
from tests.integration.test_api import DISPLAY, auth, filled, serving
from tests.integration.test_api import settings_for as api_settings_for

BLEND = {"long": "month", "short": "week", "long_share": 0.75}


def blend_settings(namespace: str, redis_url: str) -> Settings:
    base = api_settings_for(namespace, redis_url)
    data = base.model_dump()
    data["blends"] = {"tuned": BLEND}
    return load_settings(environ={}, overrides=data)


def oracle_blend(rows: list[oracle.Row], res: int, at_s: float) -> list[tuple[str, float]]:
    """0.75 * month/sum(month) + 0.25 * week/sum(week), straight from the rows."""
    weights, default = oracle.weights()
    long = oracle.scores(rows, res, 28 * 86400.0, at_s, weights, default)
    short = oracle.scores(rows, res, 7 * 86400.0, at_s, weights, default)
    tl, ts = sum(long.values()), sum(short.values())
    cells = set(long) | set(short)
    blend = {c: 0.75 * long.get(c, 0.0) / tl + 0.25 * short.get(c, 0.0) / ts for c in cells}
    return sorted(blend.items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=4000)


async def test_the_blend_matches_the_oracle_in_the_store_api_and_publications(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row]
) -> None:
    settings = blend_settings(namespace, redis_url)
    now_s = await filled(settings, client, rows)
    store = app.store(settings, client)
    want = oracle_blend(rows, 9, now_s)
    seq, got = await store.blend_top("month", "week", 0.75, 9, 20)
    assert seq == await store.seq() and len(got) == 20
    # ties in score may order differently: compare scores rank by rank
    for r, (_, expected) in zip(got, want, strict=False):
        assert r.score == pytest.approx(expected, rel=1e-9)
    assert {r.cell for r in got if r.score > want[20][1] * (1 + 1e-9)} <= {c for c, _ in want[:20]}
    assert sum(v for _, v in want) == pytest.approx(1.0)
    # the same at any later time: shares do not decay
    _, later = await store.blend_top("month", "week", 0.75, 9, 20)
    assert later == got

    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        body = (
            await h.get("/v1/blends/tuned", params={"resolution": 9}, headers=auth(DISPLAY))
        ).json()
        assert [i["cell"] for i in body["hotspots"]] == [r.cell for r in got]
        assert [i["score"] for i in body["hotspots"]] == [r.score for r in got]
        assert body["long"] == "month" and body["sequence"] == seq
        geo = (
            await h.get(
                "/v1/blends/tuned",
                params={"resolution": 9, "limit": 5, "format": "geojson"},
                headers=auth(DISPLAY),
            )
        ).json()
        assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 5
        assert geo["features"][0]["properties"]["blend"] == "tuned"
        missing = await h.get("/v1/blends/nope", headers=auth(DISPLAY))
        assert missing.status_code == 404
        assert (await h.get("/v1/blends/tuned")).status_code == 401

    publisher = Publisher(store, 10, lambda: now_s, blends=app.blends(settings))
    message = await publisher.tick()
    assert message is not None
    entered = message["lists"]["tuned:9"]["entered"]
    assert [c for c, _, _ in entered] == [r.cell for r in got[:10]]
    assert [s for _, _, s in entered] == [r.score for r in got[:10]]


@pytest.mark.parametrize(
    ("blend", "message"),
    [
        ({"long": "decade", "short": "week", "long_share": 0.5}, "blends.x.long"),
        ({"long": "week", "short": "week", "long_share": 0.5}, "the same horizon"),
        ({"long": "month", "short": "week", "long_share": 1.5}, "long_share"),
    ],
)
def test_a_bad_blend_names_its_key(blend: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, overrides={"blends": {"x": blend}})
    with pytest.raises(ConfigError, match="not a horizon's"):
        load_settings(environ={}, overrides={"blends": {"week": BLEND}})


async def test_the_tuned_count_blend_runs_as_an_engine_of_its_own(
    client: aioredis.Redis, namespace: str, redis_url: str, rows: list[oracle.Row], tmp_path: Path
) -> None:
    """What evaluate --grid chose on 2024 (0.75 x 28 d + 0.25 x 3 d of plain
    counts), served by the engine its printed config describes."""
    chosen = Blend("0.75*28d+0.25*3d s=0 count", 28 * 86400.0, 3 * 86400.0, 0.75, 0.0, False)
    config = engine_config(chosen)
    assert config is not None
    (tmp_path / "tuned.toml").write_text(config)
    settings = load_settings(
        tmp_path / "tuned.toml",
        environ={},
        overrides={"store": {"namespace": namespace, "redis_url": redis_url}},
    )
    assert settings.horizons == {"long": 28 * 86400.0, "short": 3 * 86400.0}
    assert not settings.weights.harm and settings.kafka.group == "tuned"
    now_s = await filled(settings, client, rows)
    store = app.store(settings, client)
    weights, default = oracle.weights()
    counts = {name: 1.0 if w > 0 else 0.0 for name, w in weights.items()}
    long = oracle.scores(rows, 9, 28 * 86400.0, now_s, counts, 1.0 if default > 0 else 0.0)
    short = oracle.scores(rows, 9, 3 * 86400.0, now_s, counts, 1.0 if default > 0 else 0.0)
    tl, ts = sum(long.values()), sum(short.values())
    cells = set(long) | set(short)
    blend = (0.75 * long.get(c, 0.0) / tl + 0.25 * short.get(c, 0.0) / ts for c in cells)
    want = sorted(blend, reverse=True)
    rule = settings.blends["tuned"]
    _, got = await store.blend_top(rule.long, rule.short, rule.long_share, 9, 30)
    assert [r.score for r in got] == pytest.approx(want[:30], rel=1e-9)


def test_a_single_horizon_choice_is_an_engine_with_that_horizon(tmp_path: Path) -> None:
    config = engine_config(Blend("28d s=0 harm", 28 * 86400.0, 28 * 86400.0, 1.0, 0.0, True))
    assert config is not None and "[blends." not in config
    (tmp_path / "one.toml").write_text(config)
    settings = load_settings(tmp_path / "one.toml", environ={})
    assert settings.horizons == {"tuned": 28 * 86400.0} and settings.weights.harm
    smoothed = Blend("28d s=0.5 harm", 28 * 86400.0, 28 * 86400.0, 1.0, 0.5, True)
    assert engine_config(smoothed) is None
