"""A live terminal view of the rankings (``hotspots top --live``, ``hotspots demo``).

One table per chosen horizon (by default the two shortest, at the finest
resolution) of the top cells: rank, cell, score, share of the listed cells'
total, a trend arrow and the cell's top category, under a header with the
store's ``seq``, the data time (the store's watermark, in ``grid.timezone``),
the Kafka records applied and a STALE warning when ``seq`` has not moved for
a while.

The view refreshes on every message on the leader's pub/sub channel
(:func:`streamer.adapters.publisher.channel`) and at least every
``refresh_s`` seconds. Scores are decayed to the engine's clock: the
watermark when ``time.clock = "event"``, else the wall clock.

The trend compares a cell's rank with the list shown before the latest
change of ``seq`` (rankings only change with ``seq``: decay never reorders a
forward-decayed ranking), so an arrow stays up until the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from redis.exceptions import RedisError
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamer.adapters import keys
from streamer.adapters.publisher import channel
from streamer.adapters.store import CellDetails, Store
from streamer.settings import Settings

DEFAULT_LIMIT = 15
DEFAULT_REFRESH_S = 2.0
DEFAULT_STALE_AFTER_S = 10.0
_POLL_S = 0.25  # how often a waiting view checks its stop flag

Status = Callable[[], str]
StopCheck = Callable[[], bool]


def default_horizons(settings: Settings) -> list[str]:
    """The shortest horizon and the next longer one (e.g. day and week)."""
    by_length = sorted(settings.horizons, key=lambda name: settings.horizons[name])
    return by_length[:2]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a table."""

    rank: int
    cell: str
    score: float
    share: float  # of the listed cells' total
    trend: str  # "▲ n", "▼ n", "=", "new", or "" on the first view
    category: str  # the cell's top category (profile horizon), "" if unknown


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one refresh read from the store."""

    seq: int
    watermark_s: float | None
    applied: int  # Kafka records applied: sum over the stored offsets of (offset + 1)
    at_s: float  # the time scores are decayed to
    tables: dict[str, list[Row]]
    seq_still_s: float  # seconds since seq last moved (as seen by this view)


def top_category(details: CellDetails | None) -> str:
    """The category with the largest decayed score in a cell (counts break ties)."""
    if details is None:
        return ""
    best = ""
    best_key = (-math.inf, -1)
    names = set(details.category_scores) | set(details.category_counts)
    for name in sorted(names):
        scores = details.category_scores.get(name, {})
        key = (sum(scores.values()), details.category_counts.get(name, 0))
        if key > best_key:
            best, best_key = name, key
    return best


def trend(rank: int, before: dict[str, int] | None, cell: str) -> str:
    """The arrow for a cell now at ``rank`` that had rank ``before[cell]``.

    >>> trend(2, {"a": 5}, "a"), trend(3, {"a": 1}, "a"), trend(1, {"a": 1}, "a")
    ('▲ 3', '▼ 2', '=')
    >>> trend(4, {}, "a"), trend(4, None, "a")
    ('new', '')
    """
    if before is None:
        return ""
    old = before.get(cell)
    if old is None:
        return "new"
    if old > rank:
        return f"▲ {old - rank}"
    if old < rank:
        return f"▼ {rank - old}"
    return "="


class LiveView:
    """Reads snapshots of the rankings and renders them (rich or plain text)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        horizons: Sequence[str] | None = None,
        resolution: int | None = None,
        limit: int = DEFAULT_LIMIT,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        status: Status | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        chosen = list(horizons) if horizons else default_horizons(settings)
        for name in chosen:
            if name not in settings.horizons:
                raise KeyError(
                    f"--horizon {name!r}: configured horizons are {sorted(settings.horizons)}"
                )
        res = resolution if resolution is not None else max(settings.grid.resolutions)
        if res not in settings.grid.resolutions:
            raise KeyError(
                f"--resolution {res}: configured resolutions are {settings.grid.resolutions} "
                "(key grid.resolutions)"
            )
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.settings = settings
        self.store = store
        self.horizons = chosen
        self.resolution = res
        self.limit = limit
        self.stale_after_s = stale_after_s
        self.status = status
        self.zone = ZoneInfo(settings.grid.timezone)
        self._monotonic = monotonic
        self._shown_seq: int | None = None
        self._shown: dict[str, dict[str, int]] | None = None  # ranks at _shown_seq
        self._before: dict[str, dict[str, int]] | None = None  # ranks before the last change
        self._seq_moved_at = monotonic()
        self._categories: dict[tuple[int, str], str] = {}  # (seq, cell) -> category

    # ------------------------------------------------------------------ data
    async def snapshot(self) -> Snapshot:
        """Read the header fields, the top lists and the top categories."""
        store = self.store
        client = store.client
        async with client.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.meta(store.prefix), ["seq", "watermark"])
            pipe.hvals(keys.offsets(store.prefix))
            (raw_seq, raw_wm), offsets = await pipe.execute()
        seq = int(raw_seq or 0)
        watermark = float(raw_wm) if raw_wm is not None else None
        applied = sum(int(v) + 1 for v in offsets)
        if self.settings.time.clock == "event" and watermark is not None:
            at_s = watermark
        else:
            at_s = time.time()
        now = self._monotonic()
        if seq != self._shown_seq:
            self._seq_moved_at = now
        ranked = {h: await store.top(h, self.resolution, self.limit, at_s) for h in self.horizons}
        cells = sorted({r.cell for rows in ranked.values() for r in rows})
        missing = [c for c in cells if (seq, c) not in self._categories]
        details = await asyncio.gather(*(store.cell(c, at_s) for c in missing))
        self._categories = {k: v for k, v in self._categories.items() if k[0] == seq}
        for cell, found in zip(missing, details, strict=True):
            self._categories[(seq, cell)] = top_category(found)
        if seq != self._shown_seq:
            self._before = self._shown
            self._shown = {h: {r.cell: r.rank for r in rows} for h, rows in ranked.items()}
            self._shown_seq = seq
        tables: dict[str, list[Row]] = {}
        for h, rows in ranked.items():
            total = math.fsum(r.score for r in rows)
            before = None if self._before is None else self._before.get(h, {})
            tables[h] = [
                Row(
                    r.rank,
                    r.cell,
                    r.score,
                    r.score / total if total > 0 else 0.0,
                    trend(r.rank, before, r.cell),
                    self._categories.get((seq, r.cell), ""),
                )
                for r in rows
            ]
        return Snapshot(seq, watermark, applied, at_s, tables, now - self._seq_moved_at)

    # ------------------------------------------------------------------ text
    def data_time(self, snap: Snapshot) -> str:
        """The watermark as local time in ``grid.timezone``."""
        if snap.watermark_s is None:
            return "no data yet"
        return datetime.fromtimestamp(snap.watermark_s, self.zone).strftime("%Y-%m-%d %H:%M %Z")

    def stale(self, snap: Snapshot) -> bool:
        """True when ``seq`` has not moved for ``stale_after_s`` seconds."""
        return snap.seq_still_s >= self.stale_after_s

    def render(self, snap: Snapshot, error: str | None = None) -> RenderableType:
        """The rich view of a snapshot."""
        header = Text()
        header.append("hotspots live", style="bold")
        header.append(f"  namespace {self.store.namespace}  ·  seq ")
        header.append(str(snap.seq), style="bold cyan")
        header.append("  ·  data time ")
        header.append(self.data_time(snap), style="bold")
        header.append(f"  ·  Kafka records applied {snap.applied:,}")
        header.append(f"  ·  decay: {self.settings.time.clock} clock", style="dim")
        if self.stale(snap):
            header.append(
                f"   STALE: seq unchanged for {snap.seq_still_s:.0f} s", style="bold white on red"
            )
        tables = [self._table(h, rows) for h, rows in snap.tables.items()]
        parts: list[RenderableType] = [header, Columns(tables, padding=(0, 2))]
        if error is not None:
            parts.append(Text(f"error: {error}", style="bold red"))
        footer = self.status() if self.status is not None else ""
        parts.append(
            Text(
                (footer + "  " if footer else "")
                + "(refreshes on ranking changes and every 2 s; Ctrl-C to stop)",
                style="dim",
            )
        )
        return Group(*parts)

    def _table(self, horizon: str, rows: list[Row]) -> Table:
        half_life = self.settings.horizons[horizon]
        table = Table(
            title=f"{horizon} (half-life {_duration(half_life)}), resolution {self.resolution}",
            title_style="bold",
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("#", justify="right")
        table.add_column("cell", no_wrap=True)
        table.add_column("score", justify="right", no_wrap=True)
        table.add_column("share", justify="right", no_wrap=True)
        table.add_column("trend", justify="center", no_wrap=True)
        table.add_column("top category", max_width=28, no_wrap=True, overflow="ellipsis")
        for r in rows:
            style = "green" if r.trend.startswith("▲") or r.trend == "new" else ""
            style = "red" if r.trend.startswith("▼") else style
            table.add_row(
                str(r.rank),
                r.cell,
                f"{r.score:,.2f}",
                f"{r.share:.1%}",
                Text(r.trend, style=style),
                r.category,
            )
        if not rows:
            table.add_row("", "(no cells yet)", "", "", "", "")
        return table

    def plain_line(self, snap: Snapshot) -> str:
        """One line of progress for logs and non-terminal output."""
        parts = [
            f"seq {snap.seq}",
            f"data time {self.data_time(snap)}",
            f"Kafka records applied {snap.applied}",
        ]
        for h, rows in snap.tables.items():
            if rows:
                parts.append(f"{h} #1 {rows[0].cell} {rows[0].score:.2f} ({rows[0].category})")
        if self.stale(snap):
            parts.append(f"STALE ({snap.seq_still_s:.0f} s)")
        if self.status is not None and (extra := self.status()):
            parts.append(extra)
        return " | ".join(parts)

    def plain_rankings(self, snap: Snapshot, limit: int = 10) -> str:
        """The top lists as plain text."""
        lines: list[str] = []
        for h, rows in snap.tables.items():
            lines.append(f"top {min(limit, len(rows))} cells, {h}, resolution {self.resolution}:")
            for r in rows[:limit]:
                lines.append(
                    f"{r.rank:>4}  {r.cell}  {r.score:12.2f}  {r.share:6.1%}  "
                    f"{r.trend or '-':>5}  {r.category}"
                )
        return "\n".join(lines)

    # ------------------------------------------------------------------ loop
    async def run(
        self,
        *,
        should_stop: StopCheck | None = None,
        duration_s: float | None = None,
        refresh_s: float = DEFAULT_REFRESH_S,
        plain: bool = False,
        console: Console | None = None,
    ) -> Snapshot | None:
        """Show the view until ``should_stop()`` or ``duration_s`` elapsed;
        returns the last snapshot. ``plain`` prints a line per refresh
        (at most one every ``refresh_s``) instead of the rich view; so does
        a console that is not a terminal (a pipe, a file, a log), where the
        rich view would show nothing until it stops."""
        stop = should_stop or (lambda: False)
        ends = None if duration_s is None else self._monotonic() + duration_s
        out = console or Console()
        plain = plain or not out.is_terminal

        def done() -> bool:
            return stop() or (ends is not None and self._monotonic() >= ends)

        last: Snapshot | None = None
        pubsub: Any = None
        live: Live | None = None
        if not plain:
            live = Live(console=out, auto_refresh=False, transient=False, redirect_stderr=False)
            live.start()
        try:
            while not done():
                error = None
                try:
                    if pubsub is None:
                        pubsub = self.store.client.pubsub()
                        await pubsub.subscribe(channel(self.store))
                    last = await self.snapshot()
                except (RedisError, OSError) as exc:
                    error = f"Redis: {exc}"
                    await _close(pubsub)
                    pubsub = None
                if last is not None:
                    if live is not None:
                        live.update(self.render(last, error), refresh=True)
                    else:
                        out.print(self.plain_line(last), highlight=False, soft_wrap=True)
                elif error is not None:
                    out.print(error, highlight=False)
                pubsub = await self._wait(pubsub, refresh_s, done, plain)
        finally:
            if live is not None:
                live.stop()
            await _close(pubsub)
        return last

    async def _wait(self, pubsub: Any, refresh_s: float, done: StopCheck, plain: bool) -> Any:
        """Until a ranking-change message (rich view only), ``refresh_s`` or stop."""
        deadline = self._monotonic() + refresh_s
        while not done():
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                break
            if pubsub is None:
                await asyncio.sleep(min(remaining, _POLL_S))
                continue
            try:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(remaining, _POLL_S)
                )
            except (RedisError, OSError):
                await _close(pubsub)
                return None
            if message is not None and not plain:
                break
        return pubsub


async def _close(pubsub: Any) -> None:
    if pubsub is not None:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


async def run_top_live(
    settings: Settings,
    store: Store,
    *,
    horizons: Sequence[str] | None,
    resolution: int | None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    console: Console | None = None,
) -> int:
    """``hotspots top --live``: the view until Ctrl-C or SIGTERM. Where the
    output is not a terminal it is a plain line per refresh, then the top
    lists as plain text when it stops."""
    import signal

    view = LiveView(
        settings, store, horizons=horizons, resolution=resolution, stale_after_s=stale_after_s
    )
    out = console or Console()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        last = await view.run(should_stop=stopping.is_set, console=out)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if not out.is_terminal and last is not None:
        out.print(view.plain_rankings(last, view.limit), highlight=False, soft_wrap=True)
    return 0


__all__ = [
    "LiveView",
    "Row",
    "Snapshot",
    "default_horizons",
    "run_top_live",
    "top_category",
    "trend",
]
