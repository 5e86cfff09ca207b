"""Prometheus metrics, on a registry of their own (never the global one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from streamer.core.events import REASONS

CANCEL_RESULTS = ("by_id", "by_fields", "repeated", "unknown")
TOP_CELLS = 10  # ranks of each horizon exported as hotspots_top_cell_score


def collect_process(registry: CollectorRegistry) -> None:
    """Add to ``registry`` what the default registry would carry: process_*
    (CPU, resident memory, open fds, start time), python_info and python_gc_*."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


@dataclass
class WorkerMetrics:
    """Every metric the worker exports."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        collect_process(r)
        # registered in this order, which is the order of the exposition
        self._count_records(r)
        self._time_batches(r)
        self._gauge_progress(r)
        self._rank_top_cells(r)
        self._count_alerts(r)
        self.pings = Counter(
            "hotspots_pings_total", "Patrol pings consumed, by outcome", ["outcome"], registry=r
        )
        self.ready = Gauge("hotspots_ready", "1 when Kafka and Redis answer", registry=r)

    def _count_records(self, r: CollectorRegistry) -> None:
        """What became of each consumed record: outcome, store verdict, cancel, dead letter."""
        self.events = Counter(
            "hotspots_events_total", "Events consumed, by outcome", ["outcome"], registry=r
        )
        self.verdicts = Counter(
            "hotspots_store_verdicts_total",
            "Records the store did not apply as new, by verdict (duplicate: this version "
            "already applied; stale: at or below the partition's applied offset, i.e. "
            "redelivered; unknown_cancel: a cancel of an event it does not hold). A subset "
            "of the records hotspots_events_total counts",
            ["verdict"],
            registry=r,
        )
        for verdict in ("duplicate", "stale", "unknown_cancel"):
            self.verdicts.labels(verdict)
        self.cancels = Counter(
            "hotspots_cancels_total",
            "Cancels the store took, by result (by_id: the ledger held the event; by_fields: "
            "taken out by the time, place and category the record carried; repeated: already "
            "cancelled; unknown: the store could not place it and nothing changed)",
            ["result"],
            registry=r,
        )
        for result in CANCEL_RESULTS:
            self.cancels.labels(result)
        self.dead_letters = Counter(
            "hotspots_dead_letters_total",
            "Records sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        for reason in REASONS:
            self.dead_letters.labels(reason)
        self.unknown_categories = Counter(
            "hotspots_unknown_categories_total",
            "Events whose category is not in the harm table",
            registry=r,
        )

    def _time_batches(self, r: CollectorRegistry) -> None:
        """Batch sizes and times, and the store and Kafka faults retried."""
        self.batch_size = Histogram(
            "hotspots_batch_size",
            "Records per consumed batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "hotspots_batch_seconds", "Time to process a batch, consume to commit", registry=r
        )
        self.store_seconds = Histogram("hotspots_store_seconds", "Store write latency", registry=r)
        self.store_errors = Counter(
            "hotspots_store_errors_total", "Store writes that failed and were retried", registry=r
        )
        self.kafka_errors = Counter(
            "hotspots_kafka_errors_total",
            "Kafka operations that failed and were retried",
            registry=r,
        )
        self.offset_resets = Counter(
            "hotspots_offset_resets_total",
            "Stored offsets deleted because the partition's log ends below them "
            "(broker storage lost or topic made again)",
            ["topic"],
            registry=r,
        )

    def _gauge_progress(self, r: CollectorRegistry) -> None:
        """How far behind the worker is, what it tracks and when it last published."""
        self.event_lag = Gauge(
            "hotspots_event_time_lag_seconds",
            "Wall clock minus the newest event time in the last batch",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "hotspots_consumer_lag",
            "Records behind the high watermark",
            ["topic", "partition"],
            registry=r,
        )
        self.cells = Gauge(
            "hotspots_cells_tracked",
            "Cells in the longest horizon's ranking",
            ["resolution"],
            registry=r,
        )
        self.seq = Gauge(
            "hotspots_publication_seq", "Store sequence number last published", registry=r
        )
        self.published_at = Gauge(
            "hotspots_last_publication_timestamp_seconds",
            "When this worker, as leader, last ran the publish timer (POSIX s; 0 on a "
            "worker that never led). Alert on time() - max(...) across workers",
            registry=r,
        )

    def _rank_top_cells(self, r: CollectorRegistry) -> None:
        """The leader's top cells, its publications and its timer runs."""
        # The score by rank and the cell at each rank are two metrics, so
        # that the score's series are a fixed set (horizons x TOP_CELLS) and
        # a cell's identity is a label only of the info series, which is
        # removed as soon as that cell leaves that rank
        self.top_cells = Gauge(
            "hotspots_top_cell_score",
            f"The leader's current top cells: the score at each rank (decayed to the "
            f"publication), the first {TOP_CELLS} of each horizon at the middle "
            "resolution; empty on other workers. The cell: hotspots_top_cell_info",
            ["horizon", "resolution", "rank"],
            registry=r,
        )
        self.top_cell_info = Gauge(
            "hotspots_top_cell_info",
            "1 for the cell at each rank of hotspots_top_cell_score (join on horizon, "
            "resolution, rank); a series leaves when its cell leaves that rank",
            ["horizon", "resolution", "rank", "cell"],
            registry=r,
        )
        self._ranks_shown: set[tuple[str, str, str]] = set()
        self._cells_shown: set[tuple[str, str, str, str]] = set()
        self.publications = Counter(
            "hotspots_publications_total", "Ranking change messages published", registry=r
        )
        self.timer_runs = Counter(
            "hotspots_timer_runs_total", "Leader timer runs", ["timer"], registry=r
        )

    def _count_alerts(self, r: CollectorRegistry) -> None:
        """Alert notices, open alerts, disks tested and deliveries."""
        self.alert_notices = Counter(
            "hotspots_alert_notices_total", "Alert notices written, by kind", ["kind"], registry=r
        )
        self.alerts_open = Gauge("hotspots_alerts_open", "Alerts open now", registry=r)
        self.alert_tests = Counter(
            "hotspots_alert_tests_total",
            "Disks (cell and ring) tested by the alert detector",
            registry=r,
        )
        self.alert_deliveries = Counter(
            "hotspots_alert_deliveries_total",
            "Alert notice deliveries, by target (kafka, webhook:NAME) and outcome "
            "(delivered, retried, given_up)",
            ["target", "outcome"],
            registry=r,
        )

    def show_top_cells(
        self, resolution: int, lists: Mapping[str, Iterable[tuple[str, float]]]
    ) -> None:
        """Export the first ``TOP_CELLS`` of each horizon's list (horizon ->
        [(cell, score)] best first) as the leader's top cells; the rank and
        cell pairs no longer held are removed, the rest kept as they are."""
        res = str(resolution)
        ranks: set[tuple[str, str, str]] = set()
        cells: set[tuple[str, str, str, str]] = set()
        for horizon, ranked in lists.items():
            for rank, (cell, score) in zip(range(1, TOP_CELLS + 1), ranked, strict=False):
                self.top_cells.labels(horizon, res, str(rank)).set(score)
                ranks.add((horizon, res, str(rank)))
                cells.add((horizon, res, str(rank), cell))
        for gone in self._ranks_shown - ranks:  # a list grew shorter
            self.top_cells.remove(*gone)
        for left in self._cells_shown - cells:
            self.top_cell_info.remove(*left)
        for entered in cells - self._cells_shown:
            self.top_cell_info.labels(*entered).set(1)
        self._ranks_shown, self._cells_shown = ranks, cells

    def hide_top_cells(self) -> None:
        """Export no top cells (another worker leads: its lists count)."""
        self.top_cells.clear()
        self.top_cell_info.clear()
        self._ranks_shown, self._cells_shown = set(), set()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
