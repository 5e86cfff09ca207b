"""Benchmark: the HTTP API and live push (``hotspots serve``) under load.

    PYTHONPATH=. .venv/bin/python -m bench.api [--rate R] [--seconds S]
        [--connections C] [--lower-rate L] [--closed-clients K]
        [--closed-seconds T] [--push-clients N] [--sse-share F]
        [--messages M] [--interval I] [--batch-events B] [--profile]
        [--push-only] [--server-api FILE] [--namespace NS]

The server is the app of ``hotspots serve`` (``streamer.api.build`` run by
``uvicorn.Server.run``, as ``serve()`` does, so uvicorn picks its event loop
and HTTP parser the same way) in a subprocess of its own, over a fresh
namespace of the local Redis filled with the whole 2025 Philadelphia sample
(``data/philadelphia_2025.csv.gz`` through ``app.backfill``; event clock, so
"now" is the newest event) and published once. The HTTP load generator runs
in this process and the push clients in a third one, so no client shares
the server's event loop. The HTTP client is aiohttp: httpx's pool cost this
process ~5 ms of CPU per request at 50 connections, so it could not offer
even 400 requests/s (encode/httpx#3215).

0. **floor**: ``GET /healthz`` (no token, no Redis) open loop at R/s: what
   uvicorn, the app's middleware and the client cost by themselves.
1. **risk**: ``GET /v1/risk?lat=&lon=`` (dispatch token; points of random
   events of the sample) open loop: request i is due at ``t0 + i/R`` for S
   seconds, sent by C workers over C keep-alive connections, each taking
   the next due request when free. Latency counts from the due time, so
   queueing (in the client or the server) shows; "lag" is how late requests
   left the client. Requests not yet sent ``--drain`` seconds after the last
   was due are not sent ("unsent"); the achieved rate is the requests
   answered 200 over the time from the first due time to the last answer.
   Then the same at L/s for S/2 seconds (a rate one process can sustain).
2. **hotspots**: ``GET /v1/hotspots?horizon=week&resolution=9&limit=20``
   open loop at R/s; then both endpoints **closed loop** (K clients back to
   back for T seconds): the most the server does. The store does not change
   meanwhile (its sequence number stays put, so per-sequence caches stay
   warm: live, they are refilled after every applied batch).
3. **push**: N clients (WebSocket ``/v1/ws`` and SSE ``/v1/stream``, a share
   F of them SSE) in a subprocess, connecting at most 20 at a time, all past
   their snapshot; then M times: apply B real events (sample events with new
   ids, just after the newest) with ``Store.apply``, run the real
   ``Publisher.tick()``, wait ``--interval``. Every client must get every
   message, in order. Then 1.5 heartbeat intervals of quiet: every client
   should get a heartbeat and none be cut. Last, N new clients connect all
   at once (a restart, a network blip): every one should get its snapshot.

   **What the push latency is**: from the wall-clock time the tick returned
   (Redis has acknowledged the PUBLISH, so the message is already on its way
   to the server) to the wall-clock time the message's last byte reached
   the client's socket, as the kernel stamped it on arrival
   (``SO_TIMESTAMPNS``; one host, so one ``CLOCK_REALTIME`` on both sides).
   It holds all the server's work: reading the notice from Redis, the
   fan-out to every client (the last client's wait for the 499 before it
   included) and the writes; and the loopback TCP hop. It leaves out only
   how long the client process took to get round to reading it: that
   harness cost is reported apart ("to read by the client process"). The
   clients are raw sockets on one epoll loop (``PushClients``: no asyncio,
   no client library; pings answered), so that they take little of this
   2-core machine's CPU from the server. Per message, "first arrival" is
   the earliest client's latency (the server's wake-up and Redis) and
   "first to last" the spread over the clients (the fan-out). Without
   ``SO_TIMESTAMPNS`` (not Linux) the read time is used and the table says
   so. The server runs with ``streamer.api.SERVER_OPTIONS``, as ``hotspots
   serve`` does (``--server-api FILE`` serves another copy of
   ``streamer/api.py``, for before/after runs; ``--push-only`` skips 0-2).

CPU columns: the server process, the load generator (this process; the push
clients' process in 3) and Redis (``INFO cpu``), over the phase, in % of one
core. Redis figures are of the whole local instance (``INFO commandstats``
deltas, nothing reset), so other users of it show up in them. ``--profile``
adds runs of each endpoint and of push against a server under cProfile (not
counted) and prints its top functions. Writes
``bench/results/latest-api.json`` (``latest-api-push.json`` with
``--push-only``). The namespace (``{bench-api}`` unless ``--namespace``)
is dropped before and after; every subprocess is stopped on exit, errors and Ctrl-C,
and stops itself if this process dies.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import pstats
import random
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import redis.asyncio as aioredis

from bench.common import ROOT, drop_namespace, read_marker, spawn, stop_child, tail
from bench.pipeline import machine
from streamer import api as served
from streamer import app
from streamer.adapters import keys
from streamer.adapters.files import load_profile, read_columns
from streamer.adapters.publisher import Publisher, channel
from streamer.adapters.store import EngineClock, Store, StoreOp
from streamer.api import token_digest
from streamer.core.events import Event
from streamer.local.broker import free_port
from streamer.settings import Settings, load_settings

SAMPLE = ROOT / "streamer" / "data" / "philadelphia_2025.csv.gz"
RESULTS = ROOT / "bench" / "results" / "latest-api.json"
PUSH_RESULTS = ROOT / "bench" / "results" / "latest-api-push.json"
REDIS_URL = "redis://127.0.0.1:6379/0"
NAMESPACE = "bench-api"
DISPATCH_TOKEN = "bench-api-dispatch"  # throwaway tokens of a local run
DISPLAY_TOKEN = "bench-api-display"
HOTSPOTS = "/v1/hotspots?horizon=week&resolution=9&limit=20"
TARGETS = {"rate_per_s": 1000.0, "risk_p99_ms": 5.0, "push_p99_ms": 100.0}


def log(message: str) -> None:
    print(f"[api {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def settings_for(namespace: str, redis_url: str) -> Settings:
    """Default settings, the benchmark's namespace, event clock, two tokens."""
    return load_settings(
        overrides={
            "store": {"namespace": namespace, "redis_url": redis_url},
            "time": {"clock": "event"},  # the sample is old: now = its newest event
            "api": {
                "tokens": {
                    "cad": {"token_sha256": token_digest(DISPATCH_TOKEN), "role": "dispatch"},
                    "wall": {"token_sha256": token_digest(DISPLAY_TOKEN), "role": "display"},
                }
            },
        }
    )


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Sample:
    """The sample's valid events as columns."""

    t_s: np.ndarray[Any, np.dtype[np.float64]]
    lat_deg: np.ndarray[Any, np.dtype[np.float64]]
    lon_deg: np.ndarray[Any, np.dtype[np.float64]]
    categories: np.ndarray[Any, np.dtype[np.object_]]

    def __len__(self) -> int:
        return len(self.t_s)


def read_sample() -> Sample:
    chunks = list(read_columns(SAMPLE, load_profile("philadelphia")))
    t = np.concatenate([c.occurred_at_s for c in chunks])
    lat = np.concatenate([c.lat_deg for c in chunks])
    lon = np.concatenate([c.lon_deg for c in chunks])
    cats = np.concatenate([c.categories for c in chunks])
    keep = np.isfinite(t) & np.isfinite(lat) & np.isfinite(lon)
    return Sample(t[keep], lat[keep], lon[keep], cats[keep])


def risk_paths(sample: Sample, n: int, rng: random.Random) -> list[str]:
    """``n`` risk URLs at the places of random events of the sample."""
    picks = [rng.randrange(len(sample)) for _ in range(n)]
    return [f"/v1/risk?lat={sample.lat_deg[i]:.6f}&lon={sample.lon_deg[i]:.6f}" for i in picks]


def fresh_batches(
    sample: Sample, settings: Settings, after_s: float, batches: int, size: int, rng: random.Random
) -> list[tuple[list[StoreOp], float]]:
    """Batches of real events (random ones of the sample, new ids), one
    second apart from ``after_s`` on, as the live path would apply them;
    each with its newest time."""
    scorer = app.scorer(settings)
    out: list[tuple[list[StoreOp], float]] = []
    t_s = after_s
    for b in range(batches):
        ops: list[StoreOp] = []
        for j in range(size):
            i = rng.randrange(len(sample))
            t_s += 1.0
            event = Event(
                f"bench-api-{b}-{j}",
                "incident",
                datetime.fromtimestamp(t_s, UTC),
                t_s,
                float(sample.lat_deg[i]),
                float(sample.lon_deg[i]),
                str(sample.categories[i]),
            )
            c = scorer.contribution(event)
            if c is not None:
                ops.append(StoreOp.upsert(c))
        out.append((ops, t_s))
    return out


# --------------------------------------------------------------------------- figures


def percentiles(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99, max in ms (nearest rank)."""
    if not seconds:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    v = sorted(seconds)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, max(math.ceil(q * len(v)) - 1, 0))] * 1e3, 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(v[-1] * 1e3, 2)}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    wall_s: float
    server_s: float
    generator_s: float
    redis_s: float
    redis_calls: int
    redis_usec: int


async def usage(client: aioredis.Redis, server_pid: int, generator_pid: int | None) -> Usage:
    cpu = await client.info("cpu")
    stats = await client.info("commandstats")
    return Usage(
        time.monotonic(),
        process_cpu_s(server_pid),
        process_cpu_s(generator_pid) if generator_pid else time.process_time(),
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        sum(int(v["calls"]) for v in stats.values()),
        sum(int(v["usec"]) for v in stats.values()),
    )


def cpu_share(before: Usage, after: Usage, requests: int) -> dict[str, Any]:
    wall = after.wall_s - before.wall_s
    return {
        "server_pct": round(100 * (after.server_s - before.server_s) / wall),
        "generator_pct": round(100 * (after.generator_s - before.generator_s) / wall),
        "redis_pct": round(100 * (after.redis_s - before.redis_s) / wall),
        "redis_calls_per_request": round((after.redis_calls - before.redis_calls) / requests, 1)
        if requests
        else None,
        "redis_us_per_request": round((after.redis_usec - before.redis_usec) / requests)
        if requests
        else None,
    }


# --------------------------------------------------------------------------- subprocesses


async def _marker(proc: asyncio.subprocess.Process, marker: bytes, timeout: float) -> bytes:
    found = await read_marker(proc, marker, timeout)
    if found is None:
        raise RuntimeError(f"subprocess {proc.pid} gave no {marker.decode().strip()}")
    return found


def _exit_with_parent() -> None:
    """Stop this subprocess when the benchmark that started it is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


@contextlib.asynccontextmanager
async def server(
    namespace: str,
    redis_url: str,
    workdir: Path,
    profile_out: Path | None = None,
    log_level: str = "warning",
    api_file: Path | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """The API in a subprocess: yields (base URL, pid); stops it on exit.
    ``api_file``: serve that copy of ``streamer/api.py`` instead."""
    port = free_port()
    cfg = {
        "namespace": namespace,
        "redis_url": redis_url,
        "port": port,
        "profile_out": str(profile_out) if profile_out else None,
        "log_level": log_level,
        "api_file": str(api_file.resolve()) if api_file else None,
    }
    log_path = workdir / f"server-{port}.log"
    proc = await spawn("bench.api", "_serve", cfg, log_path)
    try:
        try:
            await _marker(proc, b"READY", 60)
        except RuntimeError:
            raise RuntimeError(f"the server did not start; log:\n{tail(log_path)}") from None
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        code = await stop_child(proc, 10.0)
        if code not in (0, -signal.SIGTERM):
            log(f"server exit code {code}; log:\n{tail(log_path)}")


def _serve_child(cfg: dict[str, Any]) -> None:
    """Subprocess: uvicorn serving ``build(settings)`` until SIGTERM."""
    import uvicorn

    _exit_with_parent()
    # uvicorn stops on SIGTERM, then raises it again once its handler is
    # gone: let that be a no-op, so a profile is still written
    signal.signal(signal.SIGTERM, lambda *_: None)
    settings = settings_for(cfg["namespace"], cfg["redis_url"])
    api: Any = served
    if cfg.get("api_file"):
        spec = importlib.util.spec_from_file_location("bench_served_api", cfg["api_file"])
        assert spec is not None and spec.loader is not None
        api = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = api  # (its dataclasses look their module up)
        spec.loader.exec_module(api)
    # the options serve() runs uvicorn with (a copy that has none: those of
    # the code before they were shared, deflate off)
    options = getattr(api, "SERVER_OPTIONS", {"ws_per_message_deflate": False})
    config = uvicorn.Config(
        api.build(settings),
        host="127.0.0.1",
        port=int(cfg["port"]),
        log_level=cfg.get("log_level", "warning"),
        **{**options, "access_log": False, "timeout_graceful_shutdown": 2},
    )
    uv = uvicorn.Server(config)

    def ready() -> None:
        while not uv.started:
            time.sleep(0.02)
        os.write(1, b"READY\n")

    threading.Thread(target=ready, daemon=True).start()
    profiler = cProfile.Profile() if cfg.get("profile_out") else None
    if profiler is not None:
        profiler.enable()
    try:
        uv.run()  # as uvicorn.run() does: its choice of event loop (uvloop if installed)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(cfg["profile_out"])


# --------------------------------------------------------------------------- HTTP load


def http_client(base: str, token: str | None, connections: int) -> aiohttp.ClientSession:
    """Keep-alive connections, at most ``connections`` (aiohttp: see the
    module's docstring)."""
    return aiohttp.ClientSession(
        base,
        connector=aiohttp.TCPConnector(limit=connections),
        headers={"Authorization": f"Bearer {token}"} if token else {},
        timeout=aiohttp.ClientTimeout(total=10.0),
    )


async def fetch(session: aiohttp.ClientSession, path: str) -> str:
    """GET ``path`` and read the body: "ok", the status, or the error."""
    try:
        async with session.get(path) as response:
            await response.read()
            return "ok" if response.status == 200 else str(response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def open_loop(
    base: str,
    paths: Sequence[str],
    token: str | None,
    *,
    rate: float,
    seconds: float,
    connections: int,
    drain_s: float,
) -> dict[str, Any]:
    """Requests due at ``t0 + i / rate``; latency from the due time."""
    n = int(rate * seconds)
    latency: list[float] = []
    lag: list[float] = []
    errors: dict[str, int] = {}
    state = {"next": 0, "sent": 0, "last_end": 0.0}
    async with http_client(base, token, connections) as h:
        # every connection open before the clock starts
        await asyncio.gather(*(fetch(h, "/healthz") for _ in range(connections)))
        t0 = time.perf_counter() + 0.05
        give_up = t0 + seconds + drain_s

        async def worker() -> None:
            while state["next"] < n:
                i = int(state["next"])
                state["next"] = i + 1
                due = t0 + i / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                start = time.perf_counter()
                if start > give_up:
                    state["next"] = n  # too far behind: send no more
                    return
                state["sent"] += 1
                outcome = await fetch(h, paths[i % len(paths)])
                end = time.perf_counter()
                if outcome == "ok":
                    latency.append(end - due)
                    lag.append(start - due)
                    state["last_end"] = max(state["last_end"], end)
                else:
                    errors[outcome] = errors.get(outcome, 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    span = state["last_end"] - t0
    return {
        "offered_per_s": rate,
        "due": n,
        "sent": int(state["sent"]),
        "unsent": n - int(state["sent"]),
        "ok": len(latency),
        "errors": errors,
        "achieved_per_s": round(len(latency) / span) if span > 0 else 0,
        "latency_ms": percentiles(latency),
        "lag_ms": percentiles(lag),
    }


async def closed_loop(
    base: str, paths: Sequence[str], token: str | None, *, clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` loops sending the next request when the last is answered."""
    latency: list[float] = []
    errors: dict[str, int] = {}
    counter = {"i": 0}
    async with http_client(base, token, clients) as h:
        await asyncio.gather(*(fetch(h, "/healthz") for _ in range(clients)))
        started = time.perf_counter()
        end_at = started + seconds

        async def worker() -> None:
            while time.perf_counter() < end_at:
                i = counter["i"]
                counter["i"] = i + 1
                t = time.perf_counter()
                outcome = await fetch(h, paths[i % len(paths)])
                if outcome == "ok":
                    latency.append(time.perf_counter() - t)
                else:
                    errors[outcome] = errors.get(outcome, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        span = time.perf_counter() - started
    return {
        "clients": clients,
        "ok": len(latency),
        "errors": errors,
        "achieved_per_s": round(len(latency) / span),
        "latency_ms": percentiles(latency),
    }


async def phase(
    client: aioredis.Redis, server_pid: int, name: str, job: Awaitable[dict[str, Any]]
) -> dict[str, Any]:
    """Run one load coroutine, with the CPU and Redis work it caused."""
    before = await usage(client, server_pid, None)
    result: dict[str, Any] = await job
    after = await usage(client, server_pid, None)
    result["cpu"] = cpu_share(before, after, result["ok"] + sum(result["errors"].values()))
    log(f"{name}: {_line(result)}")
    return result


def _line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return (
        f"{r['achieved_per_s']:,}/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms, errors {r['errors'] or 0}, unsent {r.get('unsent', 0)}, "
        f"cpu {r['cpu']}"
    )


# --------------------------------------------------------------------------- push


async def measure_push(
    client: aioredis.Redis,
    store: Store,
    settings: Settings,
    base: str,
    server_pid: int,
    batches: list[tuple[list[StoreOp], float]],
    *,
    clients: int,
    sse_share: float,
    interval_s: float,
    workdir: Path,
) -> dict[str, Any]:
    """Clients in a subprocess; ticks of the real publisher from here."""
    n_sse = round(clients * sse_share)
    n_ws = clients - n_sse
    out = workdir / "push.json"
    cfg = {
        "host": base.removeprefix("http://"),
        "token": DISPLAY_TOKEN,
        "ws": n_ws,
        "sse": n_sse,
        "messages": len(batches),
        "heartbeat_s": settings.api.heartbeat,
        "out": str(out),
    }
    log_path = workdir / "push.log"
    clock = EngineClock(store, settings.time.clock)
    publisher = Publisher(store, settings.publish.top_n, clock)
    reference = PublishClock(client, channel(store))
    try:
        proc = await spawn("bench.api", "_push", cfg, log_path)
    except BaseException:
        reference.close()
        raise
    try:
        try:
            connect_s = float(await _marker(proc, b"READY ", 120))
        except RuntimeError:
            raise RuntimeError(f"push clients failed; log:\n{tail(log_path)}") from None
        log(f"push: {clients} clients connected and past their snapshot in {connect_s:.2f} s")
        before = await usage(client, server_pid, proc.pid)
        published: list[dict[str, Any]] = []
        for ops, newest_s in batches:
            await store.apply(ops, now_s=newest_s)
            await clock.refresh()
            t0 = time.time()
            message = await publisher.tick()
            t1 = time.time()
            if message is None:
                raise RuntimeError("the publisher published nothing after an apply")
            published.append(
                {
                    "seq": message["seq"],
                    "tick_start": t0,
                    "acked": t1,
                    "bytes": len(orjson.dumps(message)),
                    "changed_lists": len(message["lists"]),
                }
            )
            await asyncio.sleep(interval_s)
        await _marker(proc, b"DELIVERED", 60)
        after = await usage(client, server_pid, proc.pid)
        log(f"push: delivered; then {1.5 * settings.api.heartbeat:g} s quiet (heartbeats)")
        await _marker(proc, b"RESULT", 60)
    finally:
        reference.close()
        await stop_child(proc, 10.0)
    got = json.loads(out.read_text())
    acked = {p["seq"]: p["acked"] for p in published}
    # (a message the reference missed, were there one, is timed from the ack)
    left = {seq: reference.left.get(seq, t) for seq, t in acked.items()}
    started = {p["seq"]: p["tick_start"] for p in published}
    want = [p["seq"] for p in published]
    delays: list[float] = []
    from_ack: list[float] = []
    from_tick: list[float] = []
    in_client: list[float] = []
    by_kind: dict[str, list[float]] = {"ws": [], "sse": []}
    by_seq: dict[int, list[float]] = {seq: [] for seq in want}
    complete = 0
    missing = 0
    for k, updates in enumerate(got["updates"]):
        kind = "ws" if k < n_ws else "sse"
        seqs = [seq for seq, _, _, _ in updates]
        complete += seqs == want
        missing += len(set(want) - set(seqs))
        for seq, _previous, t, t_user in updates:
            if seq in acked:
                delays.append(t - left[seq])
                from_ack.append(t - acked[seq])
                from_tick.append(t - started[seq])
                in_client.append(t_user - left[seq])
                by_kind[kind].append(t - left[seq])
                by_seq[seq].append(t - left[seq])
    ticks = [p["acked"] - p["tick_start"] for p in published]
    # per message: its first and last arrival; the spread between is the fan-out
    first = [min(v) for v in by_seq.values() if v]
    spread = [max(v) - min(v) for v in by_seq.values() if v]
    deliveries = clients * len(want)
    return {
        "clients": clients,
        "ws": n_ws,
        "sse": n_sse,
        "messages": len(want),
        "interval_s": interval_s,
        "events_per_batch": round(sum(len(ops) for ops, _ in batches) / len(batches)),
        "messages_with_changed_lists": sum(1 for p in published if p["changed_lists"]),
        "message_bytes_median": sorted(p["bytes"] for p in published)[len(published) // 2],
        "connect_s": connect_s,
        "deliveries": len(delays),
        "deliveries_expected": deliveries,
        "clients_complete_in_order": complete,
        "missing": missing,
        "snapshots_after_first": sum(max(s - 1, 0) for s in got["snapshots"]),
        "latency_ms": percentiles(delays),
        "latency_from_tick_start_ms": percentiles(from_tick),
        "latency_from_ack_ms": percentiles(from_ack),
        "reference_missed": len(acked) - len(set(acked) & set(reference.left)),
        "latency_in_client_process_ms": percentiles(in_client),
        "first_arrival_ms": percentiles(first),
        "per_message_ms": [  # sequence, first and last arrival
            [seq, round(min(v) * 1e3, 2), round(max(v) * 1e3, 2)] for seq, v in by_seq.items() if v
        ],
        "fan_out_spread_ms": percentiles(spread),
        "kernel_clock": got["kernel_clock"],
        "latency_ws_ms": percentiles(by_kind["ws"]),
        "latency_sse_ms": percentiles(by_kind["sse"]),
        "tick_ms": percentiles(ticks),
        "cpu": cpu_share(before, after, deliveries),
        "quiet": {
            "waited_s": got["quiet_s"],
            "clients_with_heartbeat": sum(1 for n in got["heartbeats"] if n),
            "clients_cut": len(got["ended"]),
            "cut_reasons": _count(got["ended"].values()),
        },
    }


async def measure_storm(base: str, clients: int, sse_share: float, workdir: Path) -> dict[str, Any]:
    """All clients connecting at once (a server restart, a network blip):
    how many get their snapshot, how many are cut."""
    n_sse = round(clients * sse_share)
    out = workdir / "storm.json"
    cfg = {
        "host": base.removeprefix("http://"),
        "token": DISPLAY_TOKEN,
        "ws": clients - n_sse,
        "sse": n_sse,
        "storm": True,
        "out": str(out),
    }
    log_path = workdir / "storm.log"
    proc = await spawn("bench.api", "_push", cfg, log_path)
    try:
        try:
            await _marker(proc, b"RESULT", 60)
        except RuntimeError:
            raise RuntimeError(f"storm clients failed; log:\n{tail(log_path)}") from None
    finally:
        await stop_child(proc, 10.0)
    got = json.loads(out.read_text())
    result = {
        "clients": clients,
        "got_snapshot": sum(1 for n in got["snapshots"] if n),
        "cut": len(got["ended"]),
        "cut_reasons": _count(got["ended"].values()),
        "seconds": got["seconds"],
    }
    log(f"storm: {result}")
    return result


def _count(values: Iterable[object]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def _push_child(cfg: dict[str, Any]) -> None:
    _exit_with_parent()
    PushClients(cfg).run()


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # (Linux; Python does not name it)
_HEAD = re.compile(rb'\{"type":"(\w+)"(?:,"sequence":(-?\d+))?(?:,"previous":(null|-?\d+))?')


def kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The wall-clock time the kernel stamped on what ``recvmsg`` read last."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, ns = struct.unpack("qq", value[:16])
            return float(sec + ns * 1e-9)
    return None


def _resp_array(buf: bytearray) -> tuple[int, list[bytes]] | None:
    """The RESP array (of bulk strings and integers) ``buf`` starts with:
    the bytes it takes and its items; None while incomplete."""
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    if buf[:1] != b"*":
        raise ValueError(f"not a RESP array: {bytes(buf[:40])!r}")
    at, items = end + 2, []
    for _ in range(int(buf[1:end])):
        end = buf.find(b"\r\n", at)
        if end < 0:
            return None
        if buf[at : at + 1] != b"$":
            items.append(bytes(buf[at + 1 : end]))
            at = end + 2
            continue
        start = end + 2
        stop = start + int(buf[at + 1 : end])
        if len(buf) < stop + 2:
            return None
        items.append(bytes(buf[start:stop]))
        at = stop + 2
    return at, items


class PublishClock:
    """When each ranking message left Redis: a subscriber of the
    publisher's channel beside the server's, on a raw socket read by a
    thread, each arrival stamped by the kernel as the push clients' are;
    by the message's ``seq``. Redis writes a message to all its
    subscribers at once, so this is when the server's hub got it too."""

    def __init__(self, client: aioredis.Redis, name: str) -> None:
        kwargs = client.connection_pool.connection_kwargs
        self.sock = socket.create_connection(
            (kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379))), timeout=10
        )
        self.sock.settimeout(None)  # (quiet spells are no error)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        words = ["SUBSCRIBE", name]
        if kwargs.get("password"):
            words = ["AUTH", *([kwargs["username"]] if kwargs.get("username") else [])]
            words += [kwargs["password"]]
            self.sock.sendall(_resp_command(words))
            if not self.sock.recv(1024).startswith(b"+OK"):
                raise RuntimeError("the reference subscriber could not AUTH")
            words = ["SUBSCRIBE", name]
        self.sock.sendall(_resp_command(words))
        self.left: dict[int, float] = {}  # seq -> time the message left Redis
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not self.subscribed.wait(10):
            raise RuntimeError("the reference subscriber got no confirmation")

    def _read(self) -> None:
        buf = bytearray()
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16))
            except OSError:
                return
            if not data:
                return
            t = kernel_time(ancillary) or time.time()
            buf += data
            while (got := _resp_array(buf)) is not None:
                used, items = got
                del buf[:used]
                if items[0] == b"subscribe":
                    self.subscribed.set()
                elif items[0] == b"message":
                    self.left[int(orjson.loads(items[2])["seq"])] = t

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def _resp_command(words: Sequence[str]) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for w in words:
        b = w.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


class PushConnection:
    """One push client on a raw non-blocking socket: the HTTP request, then
    WebSocket frames (server frames are unmasked; pings are answered) or a
    chunked event stream, cut into JSON messages."""

    def __init__(self, k: int, websocket: bool, host: str, token: str) -> None:
        self.k = k
        self.websocket = websocket
        name, port = host.split(":")
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.kernel_clock = True
        except OSError:
            self.kernel_clock = False
        self.sock.connect_ex((name, int(port)))
        path = f"/v1/{'ws' if websocket else 'stream'}?access_token={token}"
        extra = (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            if websocket
            else "Accept: text/event-stream\r\n"
        )
        self.out = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
        self.buf = bytearray()
        self.body = bytearray()  # an event stream's data, unchunked
        self.head_done = False
        self.chunked = False
        self.pieces: list[bytes] = []  # a fragmented WebSocket message so far

    def receive(self) -> tuple[list[bytes], float] | None:
        """What arrived: the messages it completed and the time its last
        byte reached this host's kernel (the wall clock: SO_TIMESTAMPNS);
        None at the end of the stream (raises on errors)."""
        data, ancillary, _, _ = self.sock.recvmsg(1 << 18, socket.CMSG_SPACE(16))
        if not data:
            return None
        t = kernel_time(ancillary) or time.time()
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return [], t
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            status = head.split("\r\n", 1)[0]
            if status.split(" ")[1:2] != (["101"] if self.websocket else ["200"]):
                raise ConnectionRefusedError(f"handshake: {status}")
            self.chunked = "transfer-encoding: chunked" in head.lower()
            self.head_done = True
        return (self._frames() if self.websocket else self._events()), t

    def _frames(self) -> list[bytes]:
        out: list[bytes] = []
        buf = self.buf
        while len(buf) >= 2:
            opcode, size, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, at = struct.unpack_from("!H", buf, 2)[0], 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, at = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < at + size:
                break
            payload = bytes(buf[at : at + size])
            fin = buf[0] & 0x80
            del buf[: at + size]
            if opcode == 0x9:  # ping: a pong, masked as a client's frames are
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise ConnectionAbortedError(f"closed by the server ({code})")
            elif opcode in (0x1, 0x2, 0x0):
                self.pieces.append(payload)
                if fin:
                    out.append(b"".join(self.pieces))
                    self.pieces.clear()
        return out

    def _events(self) -> list[bytes]:
        if self.chunked:
            buf = self.buf
            while True:
                line = buf.find(b"\r\n")
                if line < 0:
                    break
                size = int(bytes(buf[:line]).split(b";")[0], 16)
                if size == 0:
                    raise ConnectionAbortedError("ended by the server")
                if len(buf) < line + 2 + size + 2:
                    break
                self.body += buf[line + 2 : line + 2 + size]
                del buf[: line + 2 + size + 2]
        else:
            self.body += self.buf
            self.buf.clear()
        out: list[bytes] = []
        while (end := self.body.find(b"\n\n")) >= 0:
            for field_ in bytes(self.body[:end]).split(b"\n"):
                if field_.startswith(b"data: "):
                    out.append(field_[6:])
            del self.body[: end + 2]
        return out


class PushClients:
    """Subprocess: the push clients, without asyncio or client libraries:
    raw sockets on one epoll loop, so that the harness costs little CPU
    beside the server's on this machine, and every message is timed by the
    kernel's receive timestamp of its last byte (``SO_TIMESTAMPNS``), not by
    when this process got round to it (that time is kept too, as
    ``t_user``). Each client connects (at most 20 at a time, or all at once
    for a storm) and reads its snapshot, then everything. Prints ``READY
    <s>`` when all are past their snapshot, ``DELIVERED`` when each has
    every update (or nothing came for 5 s), then, after a heartbeat interval
    and a half of quiet, writes what each received (and which were cut,
    why) to ``cfg["out"]`` and prints ``RESULT``. A storm prints only
    ``RESULT``: a second after every client has its snapshot or was cut (or
    after 10 s)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.storm = bool(cfg.get("storm"))
        self.n_ws = int(cfg["ws"])
        self.total = self.n_ws + int(cfg["sse"])
        self.wanted = int(cfg.get("messages", 0))
        # per client: (sequence, previous, kernel receive time, this process's time)
        self.updates: list[list[tuple[int, int | None, float, float]]] = [
            [] for _ in range(self.total)
        ]
        self.snapshots = [0] * self.total
        self.heartbeats = [0] * self.total
        self.ended: dict[int, str] = {}
        self.ready = 0
        self.done = 0
        self.last = 0.0
        self.waiting = list(range(self.total - 1, -1, -1))  # not connected yet
        self.handshaking = 0  # connected, snapshot not in yet
        self.gate = self.total if self.storm else 20
        self.selector = selectors.DefaultSelector()
        self.kernel_clock = True

    def on_message(self, k: int, raw: bytes, t: float) -> None:
        head = _HEAD.match(raw)
        kind = head.group(1).decode() if head else orjson.loads(raw)["type"]
        if kind == "update":
            if head is not None and head.group(2) is not None and head.group(3) is not None:
                seq, prev = int(head.group(2)), head.group(3)
                previous = None if prev == b"null" else int(prev)
            else:
                m = orjson.loads(raw)
                seq, previous = int(m["sequence"]), m.get("previous")
            self.updates[k].append((seq, previous, t, time.time()))
            self.last = time.monotonic()
            if len(self.updates[k]) == self.wanted:
                self.done += 1
        elif kind == "snapshot":
            self.snapshots[k] += 1
            if self.snapshots[k] == 1:
                self.ready += 1
                self.handshaking -= 1
        elif kind == "heartbeat":
            self.heartbeats[k] += 1

    def end(self, c: PushConnection, reason: str) -> None:
        if c.k not in self.ended:
            self.ended[c.k] = reason
            if not self.snapshots[c.k]:
                self.handshaking -= 1
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(c.sock)
        c.sock.close()

    def open_more(self) -> None:
        while self.waiting and self.handshaking < self.gate:
            k = self.waiting.pop()
            c = PushConnection(k, k < self.n_ws, self.cfg["host"], self.cfg["token"])
            self.kernel_clock = self.kernel_clock and c.kernel_clock
            self.handshaking += 1
            self.selector.register(c.sock, selectors.EVENT_WRITE, c)

    def pump(self, seconds: float, done: Callable[[], bool] = lambda: False) -> None:
        """Serve the sockets for ``seconds`` or until ``done()``."""
        deadline = time.monotonic() + seconds
        while not done() and (left := deadline - time.monotonic()) > 0:
            self.open_more()
            for key, events in self.selector.select(min(left, 0.5)):
                c: PushConnection = key.data
                try:
                    if events & selectors.EVENT_WRITE:  # connected: the request
                        c.sock.sendall(c.out)
                        self.selector.modify(c.sock, selectors.EVENT_READ, c)
                        continue
                    got = c.receive()
                    if got is None:
                        self.end(c, "ended by the server")
                        continue
                    messages, t = got
                    for raw in messages:
                        self.on_message(c.k, raw, t)
                except (OSError, ValueError) as exc:
                    self.end(
                        c, str(exc) if isinstance(exc, ConnectionError) else type(exc).__name__
                    )

    def write(self, **extra: Any) -> None:
        body = {
            "updates": self.updates,
            "snapshots": self.snapshots,
            "heartbeats": self.heartbeats,
            "ended": self.ended,
            "kernel_clock": self.kernel_clock,
        }
        Path(self.cfg["out"]).write_text(json.dumps({**body, **extra}))
        os.write(1, b"RESULT\n")

    def run(self) -> None:
        started = time.monotonic()

        def all_in() -> bool:
            return not self.waiting and self.ready + len(self.ended) >= self.total

        try:
            self.pump(10.0 if self.storm else 90.0, all_in)
            if self.storm:
                seconds = time.monotonic() - started
                self.pump(1.0)
                self.write(seconds=round(seconds, 3))
                return
            if self.ended or self.ready < self.total:
                raise RuntimeError(
                    f"{self.ready}/{self.total} clients got their snapshot; "
                    f"cut: {_count(self.ended.values())}"
                )
            os.write(1, f"READY {time.monotonic() - started:.3f}\n".encode())
            self.pump(
                600.0,
                lambda: (
                    self.done >= self.total
                    or (self.last > 0 and time.monotonic() - self.last > 5.0)
                ),
            )
            os.write(1, b"DELIVERED\n")
            before = list(self.heartbeats)
            quiet_s = float(self.cfg["heartbeat_s"]) * 1.5
            self.pump(quiet_s)
            self.heartbeats[:] = [a - b for a, b in zip(self.heartbeats, before, strict=True)]
            self.write(quiet_s=quiet_s)
        finally:
            for key in list(self.selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self.selector.close()


# --------------------------------------------------------------------------- profile


async def profiled(
    namespace: str,
    redis_url: str,
    workdir: Path,
    name: str,
    job: Callable[[str, int], Awaitable[str]],
    api_file: Path | None = None,
) -> str:
    """``job(base, pid)`` against a server under cProfile (not counted): what
    it says, then the server's top functions by own and by cumulative time."""
    path = workdir / f"profile-{name}.prof"
    async with server(namespace, redis_url, workdir, profile_out=path, api_file=api_file) as (
        base,
        pid,
    ):
        summary = await job(base, pid)
    log(f"profiled {name}: {summary}")
    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(
        r"streamer/|starlette/|fastapi/|redis/|uvicorn/|h11/|websockets/|orjson|h3/", 25
    )
    return f"{summary}\n{_trim(text.getvalue())}"


def _trim(text: str) -> str:
    site = f"{sys.prefix}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages/"
    keep = [
        ln.replace(site, "").replace(f"{ROOT}/", "")
        for ln in text.splitlines()
        if ln.strip() and not ln.lstrip().startswith(("Random listing", "List reduced", "Ordered"))
    ]
    return "\n".join(keep)


async def profile_all(
    args: argparse.Namespace,
    client: aioredis.Redis,
    store: Store,
    settings: Settings,
    workdir: Path,
    risk: list[str],
    batches: list[tuple[list[StoreOp], float]],
) -> dict[str, str]:
    """Each endpoint closed loop (``--closed-clients``, 5 s), then push with
    ``len(batches)`` ticks, each against its own profiled server."""

    def endpoint(paths: list[str], token: str) -> Callable[[str, int], Awaitable[str]]:
        async def job(base: str, _pid: int) -> str:
            await closed_loop(base, paths, token, clients=1, seconds=1.0)  # fills the caches
            r = await closed_loop(base, paths, token, clients=args.closed_clients, seconds=5.0)
            return (
                f"{r['ok']} requests in 5 s, closed loop, {args.closed_clients} clients "
                "(after 1 s of one client)"
            )

        return job

    async def push(base: str, pid: int) -> str:
        r = await measure_push(
            client,
            store,
            settings,
            base,
            pid,
            batches,
            clients=args.push_clients,
            sse_share=args.sse_share,
            interval_s=args.interval,
            workdir=workdir,
        )
        return f"{r['deliveries']} deliveries to {r['clients']} clients, {r['latency_ms']}"

    jobs = {
        "risk": endpoint(risk, DISPATCH_TOKEN),
        "hotspots": endpoint([HOTSPOTS], DISPLAY_TOKEN),
        "push": push,
    }
    return {
        name: await profiled(args.namespace, args.redis_url, workdir, name, job, args.server_api)
        for name, job in jobs.items()
    }


# --------------------------------------------------------------------------- report


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _http_rows(
    result: dict[str, Any],
    row: Callable[[str, dict[str, Any], str, str], list[str]],
    ok: Callable[[bool], str],
) -> list[list[str]]:
    t = TARGETS
    risk, hot = result["risk"], result["hotspots"]
    return [
        row("healthz open loop (stack floor)", result["floor"], "", ""),
        row(
            "risk open loop",
            risk,
            f"p99<{t['risk_p99_ms']:.0f} @{t['rate_per_s']:,.0f}/s",
            ok(
                risk["latency_ms"]["p99"] is not None
                and risk["latency_ms"]["p99"] < t["risk_p99_ms"]
                and risk["achieved_per_s"] >= 0.98 * t["rate_per_s"]
                and not risk["errors"]
                and not risk["unsent"]
            ),
        ),
        row(
            "risk open loop, lower rate",
            result["risk_lower"],
            f"p99<{t['risk_p99_ms']:.0f}",
            ok(
                result["risk_lower"]["latency_ms"]["p99"] is not None
                and result["risk_lower"]["latency_ms"]["p99"] < t["risk_p99_ms"]
            ),
        ),
        row(
            "hotspots week/9/20 open loop",
            hot,
            f"{t['rate_per_s']:,.0f}/s",
            ok(hot["achieved_per_s"] >= 0.98 * t["rate_per_s"] and not hot["unsent"]),
        ),
        row(
            f"risk closed loop {result['risk_closed']['clients']} clients",
            result["risk_closed"],
            "",
            "",
        ),
        row(
            f"hotspots closed loop {result['hotspots_closed']['clients']} clients",
            result["hotspots_closed"],
            "",
            "",
        ),
    ]


def table(result: dict[str, Any]) -> str:
    t = TARGETS

    def ok(good: bool) -> str:
        return "ok" if good else "MISS"

    def row(name: str, r: dict[str, Any], target: str, verdict: str) -> list[str]:
        lat, cpu = r["latency_ms"], r["cpu"]
        bad = sum(r["errors"].values())
        return [
            name,
            f"{r['offered_per_s']:,.0f}" if "offered_per_s" in r else "closed",
            f"{r['achieved_per_s']:,}",
            _ms(lat["p50"]),
            _ms(lat["p99"]),
            _ms(lat["max"]),
            f"{bad}/{r.get('unsent', 0)}",
            f"{cpu['server_pct']}/{cpu['generator_pct']}/{cpu['redis_pct']}",
            f"{cpu['redis_calls_per_request']}",
            target,
            verdict,
        ]

    rows = _http_rows(result, row, ok) if "risk" in result else []
    p = result["push"]
    lat, cpu = p["latency_ms"], p["cpu"]
    rows.append(
        [
            f"push {p['clients']} ({p['ws']} ws + {p['sse']} sse) x {p['messages']} msgs",
            f"{1 / p['interval_s']:.0f} msg/s",
            f"{p['deliveries']:,}/{p['deliveries_expected']:,}",
            _ms(lat["p50"]),
            _ms(lat["p99"]),
            _ms(lat["max"]),
            f"{p['missing']}/-",
            f"{cpu['server_pct']}/{cpu['generator_pct']}/{cpu['redis_pct']}",
            "-",
            f"p99<{t['push_p99_ms']:.0f}, all",
            ok(
                lat["p99"] is not None
                and lat["p99"] < t["push_p99_ms"]
                and p["clients_complete_in_order"] == p["clients"]
            ),
        ]
    )
    q, storm = p["quiet"], result["storm"]
    rows.append(
        [
            f"  then {q['waited_s']:g} s quiet: heartbeats",
            "-",
            f"{q['clients_with_heartbeat']}/{p['clients']}",
            "",
            "",
            "",
            f"cut {q['clients_cut']}",
            "",
            "",
            "none cut",
            ok(q["clients_cut"] == 0),
        ]
    )
    rows.append(
        [
            f"push {storm['clients']} connecting at once: snapshots",
            "-",
            f"{storm['got_snapshot']}/{storm['clients']}",
            "",
            "",
            "",
            f"cut {storm['cut']}",
            "",
            "",
            "none cut",
            ok(storm["cut"] == 0),
        ]
    )
    heads = [
        "measure",
        "offered/s",
        "achieved/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "err/unsent",
        "cpu% srv/gen/redis",
        "redis cmd/req",
        "target",
        "",
    ]
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if "risk" in result:
        lag = {k: _ms(result[k]["lag_ms"]["p99"]) for k in ("floor", "risk", "hotspots")}
        lines.append(
            f"open loop: {result['config']['connections']} keep-alive connections, "
            f"{result['config']['seconds']:g} s; latency from the due time; client start lag "
            f"p99: floor {lag['floor']}, risk {lag['risk']}, hotspots {lag['hotspots']} ms; "
            "redis cmd/req: whole Redis instance"
        )
    lines.append(
        "push: from the message leaving Redis (its arrival at a reference subscriber) to "
        "its last byte in the client's kernel "
        f"({'SO_TIMESTAMPNS' if p['kernel_clock'] else 'no kernel clock: read time'}); "
        f"to read by the client process p99 {_ms(p['latency_in_client_process_ms']['p99'])} ms; "
        f"from the tick's return (PUBLISH acked) p99 {_ms(p['latency_from_ack_ms']['p99'])} ms; "
        "from tick start p99 "
        f"{_ms(p['latency_from_tick_start_ms']['p99'])} ms (tick p50 {_ms(p['tick_ms']['p50'])}"
        f" ms); ws p99 {_ms(p['latency_ws_ms']['p99'])}, "
        f"sse p99 {_ms(p['latency_sse_ms']['p99'])} ms; {p['clients_complete_in_order']}/"
        f"{p['clients']} clients got every message in order; per message, first arrival p50 "
        f"{_ms(p['first_arrival_ms']['p50'])} ms, max {_ms(p['first_arrival_ms']['max'])} ms, "
        f"first to last arrival p50 {_ms(p['fan_out_spread_ms']['p50'])} ms, max "
        f"{_ms(p['fan_out_spread_ms']['max'])} ms; "
        f"{p['messages_with_changed_lists']}/{p['messages']} messages changed a top list "
        f"(median {p['message_bytes_median']:,} B, {p['events_per_batch']} events per batch); "
        f"'gen' = the push clients' process"
    )
    reasons = {**q["cut_reasons"], **{f"storm {k}": v for k, v in storm["cut_reasons"].items()}}
    if reasons:
        lines.append(f"push clients cut: {reasons}")
    m = result["machine"]
    lines.append(
        f"code: {result['code']}; {result['stack']}; store: {result['store']['events']:,} events, "
        f"{result['store']['cells_res9_week']:,} "
        f"cells ranked at res 9 (week), backfill {result['store']['backfill_s']:.1f} s; "
        f"machine: {m['cores']} cores, {m['cpu_model']}, Python {m['python']}, "
        f"load {m['loadavg_at_start']} -> {m.get('loadavg_at_end')}; wall {result['wall_s']:.0f} s"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def stack() -> str:
    """What uvicorn and redis-py pick up here (each has a fast optional part)."""
    import uvicorn

    def has(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    loop = "uvloop" if has("uvloop") else "asyncio"
    http = "httptools" if has("httptools") else "h11"
    hiredis = "with" if has("hiredis") else "without"
    return (
        f"uvicorn {uvicorn.__version__} on {loop} with {http}, "
        f"redis-py {importlib.metadata.version('redis')} {hiredis} hiredis"
    )


def code_version() -> str:
    """The commit measured (the tree moves while others work), and whether
    ``streamer/`` had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "streamer"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted streamer/ changes' if dirty else ''}"


async def http_phases(
    args: argparse.Namespace, client: aioredis.Redis, base: str, pid: int, risk: list[str]
) -> dict[str, Any]:
    """The HTTP measures (0-2 of the module's docstring), by name."""
    result: dict[str, Any] = {}
    loads: dict[str, tuple[list[str], str | None]] = {
        "floor": (["/healthz"], None),
        "risk": (risk, DISPATCH_TOKEN),
        "hotspots": ([HOTSPOTS], DISPLAY_TOKEN),
    }
    # warm-up, as many clients as the open loop has connections: the
    # server's Redis pool grows to its concurrency here, not during a
    # measured run (new connections were risk's worst tail)
    for paths, token in (loads["hotspots"], loads["risk"]):
        await closed_loop(base, paths, token, clients=args.connections, seconds=1.0)
    for name, (paths, token) in loads.items():
        result[name] = await phase(
            client,
            pid,
            name,
            open_loop(
                base,
                paths,
                token,
                rate=args.rate,
                seconds=args.seconds,
                connections=args.connections,
                drain_s=args.drain,
            ),
        )
    result["risk_lower"] = await phase(
        client,
        pid,
        f"risk at {args.lower_rate:g}/s",
        open_loop(
            base,
            risk,
            DISPATCH_TOKEN,
            rate=args.lower_rate,
            seconds=args.seconds / 2,
            connections=args.connections,
            drain_s=args.drain,
        ),
    )
    for name in ("risk", "hotspots"):
        paths, token = loads[name]
        result[f"{name}_closed"] = await phase(
            client,
            pid,
            f"{name} closed loop",
            closed_loop(
                base, paths, token, clients=args.closed_clients, seconds=args.closed_seconds
            ),
        )
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    t_all = time.monotonic()
    rng = random.Random(20250101)
    client = aioredis.Redis.from_url(args.redis_url)
    settings = settings_for(args.namespace, args.redis_url)
    store = app.store(settings, client)
    workdir = Path(tempfile.mkdtemp(prefix="hotspots-bench-api-"))
    main_task = asyncio.current_task()
    assert main_task is not None
    # a SIGTERM unwinds like Ctrl-C: subprocesses stopped, namespace dropped
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    failed = True
    result: dict[str, Any] = {
        "config": {
            k: getattr(args, k)
            for k in (
                "rate",
                "seconds",
                "connections",
                "drain",
                "lower_rate",
                "closed_clients",
                "closed_seconds",
                "push_clients",
                "sse_share",
                "messages",
                "interval",
                "batch_events",
            )
        },
        "machine": machine(),
        "code": code_version(),
        "stack": stack(),
    }
    try:
        await drop_namespace(client, args.namespace)
        log(f"backfill {SAMPLE.name} into {{{args.namespace}}}")
        report = await app.backfill(
            settings, store, SAMPLE, load_profile("philadelphia"), now_s=time.time(), force=True
        )
        clock = EngineClock(store, settings.time.clock)
        await clock.refresh()
        await Publisher(store, settings.publish.top_n, clock).tick()
        result["store"] = {
            "events": report.accepted,
            "cells": report.cells,
            "cells_res9_week": int(await client.zcard(keys.rank(store.prefix, "week", 9))),
            "backfill_s": round(report.seconds, 2),
        }
        sample = read_sample()
        risk = risk_paths(sample, 20_000, rng)
        profile_ticks = 20 if args.profile else 0
        batches = fresh_batches(
            sample, settings, clock(), args.messages + profile_ticks, args.batch_events, rng
        )
        batches, extra = batches[: args.messages], batches[args.messages :]
        async with server(args.namespace, args.redis_url, workdir, api_file=args.server_api) as (
            base,
            pid,
        ):
            log(f"server pid {pid} on {base}")
            if not args.push_only:
                result.update(await http_phases(args, client, base, pid, risk))
            result["push"] = await measure_push(
                client,
                store,
                settings,
                base,
                pid,
                batches,
                clients=args.push_clients,
                sse_share=args.sse_share,
                interval_s=args.interval,
                workdir=workdir,
            )
            p = result["push"]
            log(f"push: {p['latency_ms']}, complete {p['clients_complete_in_order']}")
            log(f"push, quiet: {p['quiet']}")
            result["storm"] = await measure_storm(base, args.push_clients, args.sse_share, workdir)
        if args.profile:
            result["profile"] = await profile_all(
                args, client, store, settings, workdir, risk, extra
            )
        failed = False
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: nothing to look into
        failed = False
        raise
    finally:
        with contextlib.suppress(Exception):
            await drop_namespace(client, args.namespace)
        await client.aclose()
        if failed:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["targets"] = TARGETS
    result["wall_s"] = round(time.monotonic() - t_all, 1)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="open loop: requests/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="open loop: duration")
    parser.add_argument("--connections", type=int, default=50, help="open loop: connections")
    parser.add_argument(
        "--drain", type=float, default=5.0, help="open loop: send nothing this late (s)"
    )
    parser.add_argument(
        "--lower-rate", type=float, default=500.0, help="risk again at this rate, S/2 seconds"
    )
    parser.add_argument("--closed-clients", type=int, default=20)
    parser.add_argument("--closed-seconds", type=float, default=5.0)
    parser.add_argument("--push-clients", type=int, default=200)
    parser.add_argument("--sse-share", type=float, default=0.5, help="push: share of SSE clients")
    parser.add_argument("--messages", type=int, default=50, help="push: publisher ticks")
    parser.add_argument("--interval", type=float, default=0.2, help="push: seconds between ticks")
    parser.add_argument("--batch-events", type=int, default=100, help="push: events per tick")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument(
        "--namespace", default=NAMESPACE, help="Redis namespace (dropped before and after)"
    )
    parser.add_argument(
        "--push-only", action="store_true", help="only push and the connection storm"
    )
    parser.add_argument(
        "--server-api",
        type=Path,
        help="serve build() of this copy of streamer/api.py (before/after comparisons)",
    )
    parser.add_argument("--out", type=Path, help=f"default {RESULTS} ({PUSH_RESULTS} push-only)")
    parser.add_argument(
        "--profile", action="store_true", help="then each endpoint under cProfile (not counted)"
    )
    args = parser.parse_args(argv)
    counts = (args.rate, args.lower_rate, args.seconds, args.connections, args.push_clients)
    if min(*counts, args.messages, args.batch_events, args.closed_clients) <= 0:
        parser.error("rates, durations and counts must be positive")
    if not 0.0 <= args.sse_share <= 1.0:
        parser.error("--sse-share is between 0 and 1")
    if args.out is None:
        args.out = PUSH_RESULTS if args.push_only else RESULTS
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; returns the figures."""
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted: subprocesses stopped, namespace dropped")
        raise SystemExit(130) from None
    print(table(result))
    for name, text in result.get("profile", {}).items():
        print(f"\n{name}, server under cProfile: {text}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_serve":
        _serve_child(json.loads(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "_push":
        _push_child(json.loads(sys.argv[2]))
    else:
        main()
