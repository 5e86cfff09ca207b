"""Make the bundled sample ``data/philadelphia_2025.csv.gz`` from the shared data.

Keeps the Philadelphia rows of the latest calendar year in the shared file
(or, if a year does not fit in the size budget, the latest whole months that
do), only the columns ``streamer/config/sources/philadelphia.toml`` reads, with
coordinates rounded to 6 decimals (about 0.1 m). Rows stay in source order.
The gzip header carries no name or time, so the output is byte-for-byte
reproducible.

    .venv/bin/python bench/make_sample.py [--source PATH] [--out PATH] [--max-mb 5]
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "philadelphia" / "incidents_2016_2025.csv.gz"
OUT = REPO / "streamer" / "data" / "philadelphia_2025.csv.gz"
COLUMNS = ["dc_key", "t_local", "lat", "lon", "text_general_code"]


def load(source: Path) -> pa.Table:
    """The needed columns, times kept as written (text)."""
    return pacsv.read_csv(
        source,
        convert_options=pacsv.ConvertOptions(
            include_columns=COLUMNS,
            column_types={"dc_key": pa.string(), "t_local": pa.string()},
        ),
    )


def encode(table: pa.Table) -> bytes:
    """CSV (header; no quotes unless a value needs them) gzipped without name or mtime."""
    table = table.set_column(
        table.schema.get_field_index("lat"), "lat", pc.round(table["lat"], 6)
    ).set_column(table.schema.get_field_index("lon"), "lon", pc.round(table["lon"], 6))
    header = (",".join(table.column_names) + "\n").encode()
    text = io.BytesIO()
    try:
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        pacsv.write_csv(table, text, write_options=options)
    except pa.ArrowInvalid:  # some value holds a comma or quote: quote strings
        text = io.BytesIO()
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        pacsv.write_csv(table, text, write_options=options)
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=9, mtime=0) as gz:
        gz.write(header + text.getvalue())
    return packed.getvalue()


def select(table: pa.Table, max_bytes: int) -> tuple[pa.Table, bytes, str]:
    """The latest year, or its latest whole months that fit in ``max_bytes``."""
    months = pc.utf8_slice_codeunits(table["t_local"], 0, 7)  # "YYYY-MM"
    year = pc.max(pc.utf8_slice_codeunits(table["t_local"], 0, 4)).as_py()
    for first_month in range(1, 13):
        start = f"{year}-{first_month:02d}"
        chosen = table.filter(
            pc.and_(
                pc.greater_equal(months, start),
                pc.starts_with(table["t_local"], f"{year}-"),
            )
        )
        blob = encode(chosen)
        if len(blob) <= max_bytes:
            span = f"{year}" if first_month == 1 else f"{start} to {year}-12"
            return chosen, blob, span
    raise SystemExit(f"not even one month of {year} fits in {max_bytes} bytes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--max-mb", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"shared data not found: {args.source}", file=sys.stderr)
        return 1
    table = load(args.source)
    chosen, blob, span = select(table, int(args.max_mb * 1_000_000))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    times = chosen["t_local"]
    print(
        f"wrote {args.out} ({len(blob):,} bytes): {chosen.num_rows:,} rows, "
        f"{span}: {pc.min(times).as_py()} to {pc.max(times).as_py()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
