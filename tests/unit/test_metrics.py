"""The worker's metrics: its own registry carries the process collectors,
and the top cells export a bounded set of series however the top changes."""

from __future__ import annotations

import random

from prometheus_client.parser import text_string_to_metric_families

from streamer.adapters.metrics import TOP_CELLS, WorkerMetrics


def samples(metrics: WorkerMetrics, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of ``name`` in the exposition."""
    text = metrics.render().decode()
    return [
        dict(s.labels)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_the_registry_exports_process_and_platform_metrics() -> None:
    text = WorkerMetrics().render().decode()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info{",
        "python_gc_collections_total",
    ):
        assert name in text, name


def test_top_cells_keep_a_fixed_set_of_score_series_however_the_top_changes() -> None:
    metrics = WorkerMetrics()
    rng = random.Random(7)
    cells = [f"89{n:013x}" for n in range(500)]
    horizons = ("day", "week", "month", "year")
    score_series: set[tuple[tuple[str, str], ...]] = set()
    for _ in range(200):  # 200 publications, each with a reshuffled top
        lists = {h: [(c, 100.0 - i) for i, c in enumerate(rng.sample(cells, 50))] for h in horizons}
        metrics.show_top_cells(9, lists)
        scores = samples(metrics, "hotspots_top_cell_score")
        score_series |= {tuple(sorted(s.items())) for s in scores}
        assert all("cell" not in s for s in scores)
        info = samples(metrics, "hotspots_top_cell_info")
        # exactly the cell at each rank now, none of the cells that left
        assert sorted((s["horizon"], int(s["rank"]), s["cell"]) for s in info) == sorted(
            (h, rank, c)
            for h in horizons
            for rank, (c, _) in enumerate(lists[h][:TOP_CELLS], start=1)
        )
    assert len(score_series) == len(horizons) * TOP_CELLS


def test_a_shorter_list_drops_its_lower_ranks_and_another_leader_hides_all() -> None:
    metrics = WorkerMetrics()
    metrics.show_top_cells(9, {"day": [(f"c{i}", 10.0 - i) for i in range(10)]})
    metrics.show_top_cells(9, {"day": [("c9", 3.0), ("c1", 2.0)]})
    scores = {s["rank"] for s in samples(metrics, "hotspots_top_cell_score")}
    info = {(s["rank"], s["cell"]) for s in samples(metrics, "hotspots_top_cell_info")}
    assert scores == {"1", "2"} and info == {("1", "c9"), ("2", "c1")}
    metrics.hide_top_cells()
    assert samples(metrics, "hotspots_top_cell_score") == []
    assert samples(metrics, "hotspots_top_cell_info") == []
