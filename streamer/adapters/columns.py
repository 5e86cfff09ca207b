"""One chunk of a bulk file's events as parallel numpy columns.

What :func:`streamer.adapters.files.read_columns` yields, whatever the file
(a force's CSV export through its source profile, or native JSON lines).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ObjectArray = npt.NDArray[np.object_]
FloatArray = npt.NDArray[np.float64]


@dataclass
class Columns:
    """One chunk of events as parallel numpy arrays (row ``i`` across all)."""

    ids: ObjectArray  # str
    occurred_at_s: FloatArray  # POSIX seconds UTC; NaN where unparseable
    lat_deg: FloatArray  # NaN where missing or not a number
    lon_deg: FloatArray
    categories: ObjectArray  # str
    kinds: ObjectArray  # str
    origins: ObjectArray  # str
    ops: ObjectArray  # str: "upsert" unless the file says otherwise
    priorities: ObjectArray  # int, str (as written) or None
    addresses: ObjectArray  # str: the place as written (a block address); "" when none
    category_codes: ObjectArray  # str: offence or call code (UCR, NIBRS, the force's); ""
    # str: "" where the written coordinates were usable, else why not (one
    # of core.event_model.COORDINATE_FAULTS; lat/lon are NaN there)
    coordinate_faults: ObjectArray
    # Columns constant in a file (kind, origin, ...) may be read-only
    # broadcast views; copy before writing into them.

    def __len__(self) -> int:
        return len(self.ids)


def concat_columns(chunks: Iterable[Columns]) -> Columns:
    """The chunks of :func:`~streamer.adapters.files.read_columns` as one."""
    parts = list(chunks)
    if len(parts) == 1:
        return parts[0]
    names = [f.name for f in dataclasses.fields(Columns)]
    return Columns(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def constant(value: object, n: int) -> ObjectArray:
    """``n`` copies of ``value`` as a read-only zero-stride view: O(1), not O(n)."""
    one = np.empty(1, dtype=object)
    one[0] = value
    view: ObjectArray = np.broadcast_to(one, (n,))
    return view
