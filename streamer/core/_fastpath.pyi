"""Types of the compiled kernel (``_fastpath.c``); use :mod:`streamer.core.fastpath`."""

from collections.abc import Callable, Sequence

OffsetOf = Callable[[int], int | None]
WeighingRow = tuple[float, str, str, str, str, bool]
ParseResult = tuple[
    bytearray,  # message index of each accepted row (int64)
    list[str],  # ids
    list[str],  # packed
    bytearray,  # t_s (float64)
    bytearray,  # weight (float64)
    bytearray,  # family (int64)
    bytearray,  # category (int64)
    bytearray,  # hour of week (int64)
    bytearray,  # cells (uint64, rows x resolutions)
    list[str],  # families
    list[str],  # categories
    list[tuple[int, str]],  # excluded
    dict[str, int],  # unknown categories
    list[int],  # rest
    float | None,  # newest event time
]

class Kernel:
    def __init__(
        self,
        loads: Callable[[bytes], object],
        max_payload_bytes: int,
        max_future_skew_s: float,
        area_contains: Callable[[float, float], bool] | None,
        naive_offset_us: OffsetOf,
        weigh: Callable[[str, str], WeighingRow | None],
        steady_hour_of_week: Callable[[int], int],
        hour_of_week: Callable[[float], int],
        resolutions: Sequence[int],
        h3_capsule: object | None,
        h3_py: Callable[[float, float, int], int],
    ) -> None: ...
    def parse(self, values: Sequence[bytes | None], now_s: float, /) -> ParseResult: ...

def encode_cells(
    m: int,
    n_res: int,
    t_s: object,
    weight: object,
    family: object,
    category: object,
    hour_of_week: object,
    cells: object,
    n_families: int,
    n_categories: int,
    half_lives: Sequence[float],
    landmarks: Sequence[int],
    profile: int,
    /,
) -> tuple[list[int], list[int], list[tuple[str, bytes]]]: ...
