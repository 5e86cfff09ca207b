"""The benchmarks' figures in one table: ``python -m bench.summary``.

Reads the ``bench/results/latest-*.json`` files the benchmarks write (``python
-m bench`` runs them all, then this), prints each figure beside its ceiling
or alternative and its target, and writes ``bench/results/latest.json``. A
benchmark that has not run is shown as missing, never guessed.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from typing import Any

from bench.common import RESULTS_DIR

Row = tuple[str, str, str, str, str]  # measure, figure, beside it, target, verdict
FIELDS = ("measure", "figure", "beside", "target", "verdict")


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"latest-{name}.json"
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def _kernel(d: dict[str, Any]) -> list[Row]:
    k, c = d["kernel_events_per_s"], d["ceiling_events_per_s"]
    return [
        (
            "core kernel, one core",
            f"{k:,} events/s",
            f"orjson + h3 alone {c:,}/s ({100 * k / c:.1f} %)",
            ">= 50 % of it",
            _verdict(k >= 0.5 * c),
        )
    ]


def _backfill(d: dict[str, Any]) -> list[Row]:
    return [
        (
            "backfill, the full Philadelphia file",
            f"{d['median_s']} s ({d['events_per_s']:,} events/s)",
            f"{d['events_read']:,} events",
            "< 10 s",
            _verdict(float(d["median_s"]) < 10),
        ),
        (
            "Redis memory",
            f"{d['redis_bytes_per_cell_and_horizon']} B per cell and horizon",
            f"{d['cells_tracked']:,} cells; ledger {d['ledger_bytes_per_event']} B/event",
            "",
            "",
        ),
    ]


def _pipeline(d: dict[str, Any]) -> list[Row]:
    s = d["summary"]
    return [
        (
            "live, one worker, Kafka to Redis",
            f"{s['engine_events_per_s']:,} events/s",
            f"raw getmany {s['raw_msgs_per_s']:,}/s ({100 * s['engine_over_raw']:.1f} %); "
            f"per-event agent {s['agent_events_per_s']:,}/s ({s['engine_over_agent']:.1f}x)",
            ">= 100 k/s, >= 25 % of raw, >= 7x agent",
            _verdict(
                s["engine_events_per_s"] >= 100_000
                and s["engine_over_raw"] >= 0.25
                and s["engine_over_agent"] >= 7
            ),
        ),
        (
            "publish to ranking, 2 k events/s",
            f"p99 {s['latency_visible_p99_ms']} ms",
            f"pub/sub message p99 {s['latency_pubsub_p99_ms']} ms",
            "p99 < 250 ms",
            _verdict(s["latency_visible_p99_ms"] < 250),
        ),
    ]


def _api(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, name in (("risk", "/v1/risk"), ("hotspots", "/v1/hotspots")):
        r = d[key]
        lat = r["latency_ms"]
        rows.append(
            (
                f"{name} at {r['offered_per_s']:,.0f}/s",
                f"p50 {lat['p50']} / p99 {lat['p99']} ms, {r['achieved_per_s']:,}/s served",
                f"/healthz (the stack) p99 {d['floor']['latency_ms']['p99']} ms",
                "p99 < 5 ms at 1 k/s",
                _verdict(lat["p99"] < 5 and r["achieved_per_s"] >= 0.99 * r["offered_per_s"]),
            )
        )
    p = d["push"]
    rows.append(
        (
            f"push to {p['clients']} clients",
            f"p99 {p['latency_ms']['p99']} ms",
            f"{p['clients_complete_in_order']}/{p['clients']} complete and in order",
            "p99 < 100 ms (500 clients)",
            _verdict(p["latency_ms"]["p99"] < 100 and p["clients"] >= 500),
        )
    )
    return rows


def _scaleout(d: dict[str, Any]) -> list[Row]:
    by = {int(workers): row for workers, row in d["summary"].items()}
    cells = ", ".join(
        f"{w}: {row['events_per_s']:,}/s ({row['over_1_worker']:.2f}x)"
        for w, row in sorted(by.items())
    )
    return [("scale-out, workers in one group", cells, "one engine's Redis is the limit", "", "")]


def _pings(d: dict[str, Any]) -> list[Row]:
    cells = ", ".join(f"{r['hours']:g} h: {r['pings_per_s']:,.0f}/s" for r in d["rows"])
    bytes_per = max(r["bytes_per_ping"] for r in d["rows"])
    return [
        (
            "patrol pings by history per unit (growth)",
            cells,
            f"<= {bytes_per:.0f} B per stored ping",
            "",
            "",
        )
    ]


def _memory(d: dict[str, Any]) -> list[Row]:
    years = d["last_year"] - d["first_year"] + 1
    beside = (
        f"after one year: {d['bytes_per_cell_and_horizon_first_year']} B, "
        f"{d['cells_first_year']:,} cells, {d['namespace_bytes_first_year'] / 1e6:.1f} MB"
    )
    if "no_upkeep_namespace_bytes_last_year" in d:
        beside += (
            f"; no prune or trim: {d['no_upkeep_namespace_bytes_last_year'] / 1e6:.1f} MB "
            f"(ledger {d['no_upkeep_ledger_entries_last_year']:,})"
        )
    return [
        (
            f"Redis memory after {years} years' replay (maintained)",
            f"{d['bytes_per_cell_and_horizon_last_year']} B per cell and horizon, "
            f"{d['cells_last_year']:,} cells, {d['namespace_bytes_last_year'] / 1e6:.1f} MB, "
            f"ledger {d['ledger_entries_last_year']:,}",
            beside,
            "bounded",
            "",
        )
    ]


# the growth measures shown here (bench.growth prints them all)
GROWTH_ROWS = (
    "kernel",
    "Store.apply",
    "Redis, namespace",
    "backfill",
    "Store.top(week, 9, 50) p99",
    "Store.cells(cell + 6 neighbours) p99",
    "Store.positions(3 cells) /v1/risk p99",
    "Store.ranking(week, 9) (whole) p50",
    "same city: backfill s (1 year vs 10)",
)


def _growth(d: dict[str, Any]) -> list[Row]:
    top = max(d["scales"])
    rows: list[Row] = []
    for r in d["rows"]:
        if r["measure"] not in GROWTH_ROWS:
            continue
        unit = f" {r['unit']}" if r["unit"] else ""
        values = r["values"]
        over = r["ratio"] / r["linear"] if r["linear"] else 0.0
        shape = "sublinear" if over < 0.8 else "linear" if over <= 1.25 else "SUPERLINEAR"
        rows.append(
            (
                f"growth x{top}: {r['measure']}{unit}",
                f"{values['1']:,} -> {values[str(top)]:,} ({r['ratio']:.2f}x)",
                f"linear: {r['linear']:g}x" + (" (flat per unit)" if r["linear"] == 1 else ""),
                "<= linear",
                shape,
            )
        )
    return rows


SECTIONS: list[tuple[str, Callable[[dict[str, Any]], list[Row]]]] = [
    ("kernel", _kernel),
    ("backfill", _backfill),
    ("memory", _memory),
    ("pipeline", _pipeline),
    ("api", _api),
    ("scaleout", _scaleout),
    ("pings", _pings),
    ("growth", _growth),
]


def main() -> None:
    rows: list[Row] = []
    sources: dict[str, Any] = {}
    for name, section in SECTIONS:
        data = _load(name)
        if data is None:
            rows.append((name, "not run", "", "", "missing"))
            continue
        sources[name] = data
        try:
            rows += section(data)
        except (KeyError, TypeError, ZeroDivisionError) as exc:  # an older result file
            rows.append((name, f"unreadable ({exc!r})", "", "", "missing"))
    header: Row = ("measure", "figure", "beside it", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    print(f"machine: {machine}; from bench/results/latest-*.json")
    summary = {
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "rows": [dict(zip(FIELDS, r, strict=True)) for r in rows],
        "sources": sources,
    }
    (RESULTS_DIR / "latest.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
