"""The worker's per-batch kernel, compiled: the common case in C.

:class:`FastParser` does what :func:`streamer.core.events.parse_record`
followed by :meth:`streamer.core.scoring.Scorer.contribution` (and
:func:`streamer.core.aggregate.batch_of`) do to a batch of raw values, for
the records it is sure of, bit for bit; every other record (invalid input,
cancels, an odd time string, an hour with a zone transition in it, ...) is
left to that Python code: its index is in :attr:`Parsed.rest`. The rules that
live in Python (time-zone offsets, the weighing, the area, the hour of the
week around zone transitions) are asked of it and memoised in C.

:func:`encode_cells` is the compiled twin of
:func:`streamer.core.aggregate.encode_cells`: the same blobs, except that each
cell's double-double totals are summed row by row instead of in numpy's
pairwise tree. Both are within about 2**-100 of the exact sum (all terms are
positive), so ``hi`` (the normalised, rounded total) agrees and ``lo`` agrees
to within a few units of 2**-100 of ``hi``.

The extension (``_fastpath.c``) is built by ``setup.py`` as an optional
extension: :data:`AVAILABLE` says whether it was, and without it
:class:`FastParser` defers every record and :func:`encode_cells` calls the
Python one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

import numpy as np
import orjson

from streamer.core import aggregate
from streamer.core.aggregate import I64, Batch
from streamer.core.cells import cell_of, latlng_to_cell_capsule
from streamer.core.events import EventRules
from streamer.core.scoring import SEP, Scorer, _steady_hour_of_week

try:
    from streamer.core import _fastpath
except ImportError:  # built without a compiler: the Python path does it all
    _fastpath = None  # type: ignore[assignment]

AVAILABLE: bool = _fastpath is not None
"""Whether the compiled module imported."""

_EPOCH_NAIVE = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_HOUR = timedelta(hours=1)
_LAST_US_OF_HOUR = timedelta(microseconds=3_599_999_999)
_WeighingRow = tuple[float, str, str, str, str, bool]


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the compiled path made of a batch of raw values.

    ``index`` (ascending), ``ids``, ``packed`` and the rows of ``batch`` are
    the accepted upserts; ``excluded`` the valid upserts whose weight is not
    positive (the store takes them out: an ``x`` op); ``rest`` every other
    message index, for :func:`streamer.core.events.parse_record` to decide.
    ``unknown_categories`` counts the raw categories, of accepted and
    excluded records, that the weight table does not name.
    """

    index: I64
    ids: list[str]
    packed: list[str]
    batch: Batch
    excluded: list[tuple[int, str]]
    unknown_categories: dict[str, int]
    rest: list[int]
    newest_event_s: float | None


class FastParser:
    """Parses, validates and weighs batches of raw values in C (see the module)."""

    __slots__ = ("_kernel", "_width")

    def __init__(self, rules: EventRules, scorer: Scorer) -> None:
        self._width = len(scorer.resolutions)
        self._kernel: _fastpath.Kernel | None = None
        if not AVAILABLE:
            return
        known = scorer.weights.rules
        weighing = scorer._weighing

        def weigh(category: str, origin: str) -> _WeighingRow | None:
            weight, family, cleaned = weighing(category, origin)
            if type(weight) is not float or not math.isfinite(weight):
                return None  # an odd weight: Python packs it
            return weight, repr(weight), family, cleaned, family + SEP + cleaned, category in known

        zone = scorer.zone
        area = rules.area
        self._kernel = _fastpath.Kernel(
            loads=orjson.loads,
            max_payload_bytes=rules.max_payload_bytes,
            max_future_skew_s=rules.max_future_skew_s,
            area_contains=None if area is None else area.contains,
            naive_offset_us=_naive_offsets(rules.zone),
            weigh=weigh,
            steady_hour_of_week=lambda hour: _steady_hour_of_week(hour, zone),
            hour_of_week=scorer.hour_of_week,
            resolutions=tuple(scorer.resolutions),
            h3_capsule=latlng_to_cell_capsule(),
            h3_py=cell_of,
        )

    def parse(self, values: Sequence[bytes | None], now_s: float) -> Parsed:
        """The records of ``values`` taken in C, and the indexes of the rest.

        ``now_s`` bounds how far in the future an event may be, as for
        :func:`streamer.core.events.parse_record`.
        """
        if self._kernel is None:
            return Parsed(
                index=np.zeros(0, dtype=np.int64),
                ids=[],
                packed=[],
                batch=_empty_batch(self._width),
                excluded=[],
                unknown_categories={},
                rest=list(range(len(values))),
                newest_event_s=None,
            )
        (index, ids, packed, t_s, weight, family, category, how, cells, families, categories,
         excluded, unknown, rest, newest) = self._kernel.parse(values, float(now_s))  # fmt: skip
        batch = Batch(
            t_s=np.frombuffer(t_s, dtype=np.float64),
            weight=np.frombuffer(weight, dtype=np.float64),
            family=np.frombuffer(family, dtype=np.int64),
            category=np.frombuffer(category, dtype=np.int64),
            hour_of_week=np.frombuffer(how, dtype=np.int64),
            cells=np.frombuffer(cells, dtype=np.uint64).reshape(-1, self._width),
            families=families,
            categories=categories,
        )
        return Parsed(
            index=np.frombuffer(index, dtype=np.int64),
            ids=ids,
            packed=packed,
            batch=batch,
            excluded=excluded,
            unknown_categories=unknown,
            rest=rest,
            newest_event_s=newest,
        )


def encode_cells(
    batch: Batch,
    *,
    resolutions: Sequence[int],
    horizons: Mapping[str, float],
    landmarks: Mapping[str, int],
    profile_horizon: str,
) -> tuple[list[str], list[tuple[str, bytes]]]:
    """The compiled twin of :func:`streamer.core.aggregate.encode_cells`:
    same signature, same output (``lo`` aside, see the module)."""
    if _fastpath is None:
        return aggregate.encode_cells(
            batch,
            resolutions=resolutions,
            horizons=horizons,
            landmarks=landmarks,
            profile_horizon=profile_horizon,
        )
    m = len(batch)
    if m == 0:
        return [], []
    if batch.cells.shape != (m, len(resolutions)):
        raise ValueError(f"cells {batch.cells.shape} do not match resolutions {resolutions}")
    names = list(horizons)
    used_families, used_categories, cells = _fastpath.encode_cells(
        m,
        len(resolutions),
        np.ascontiguousarray(batch.t_s, dtype=np.float64),
        np.ascontiguousarray(batch.weight, dtype=np.float64),
        np.ascontiguousarray(batch.family, dtype=np.int64),
        np.ascontiguousarray(batch.category, dtype=np.int64),
        np.ascontiguousarray(batch.hour_of_week, dtype=np.int64),
        np.ascontiguousarray(batch.cells, dtype=np.uint64),
        len(batch.families),
        len(batch.categories),
        [float(horizons[name]) for name in names],
        [int(landmarks[name]) for name in names],
        names.index(profile_horizon),
    )
    labels = [f"f:{batch.families[i]}" for i in used_families]
    labels += [f"c:{batch.categories[i]}" for i in used_categories]
    return labels, cells


def _naive_offsets(zone: tzinfo) -> _fastpath.OffsetOf:
    """The offset (microseconds) that naive times of a local hour (counted
    from 1970-01-01T00:00) get, as ``events._occurred_at`` applies it
    (``zone.utcoffset`` of the naive time, fold 0), or None when it is not
    the same at the hour's first and last microsecond."""

    def offset_us(hour: int) -> int | None:
        if zone is UTC:
            return 0
        start = _EPOCH_NAIVE + hour * _HOUR
        first = zone.utcoffset(start)
        if first is None or first != zone.utcoffset(start + _LAST_US_OF_HOUR):
            return None
        return first // _ONE_US

    return offset_us


def _empty_batch(width: int) -> Batch:
    return Batch(
        t_s=np.zeros(0),
        weight=np.zeros(0),
        family=np.zeros(0, dtype=np.int64),
        category=np.zeros(0, dtype=np.int64),
        hour_of_week=np.zeros(0, dtype=np.int64),
        cells=np.zeros((0, width), dtype=np.uint64),
        families=[],
        categories=[],
    )
