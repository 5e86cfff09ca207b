"""The ``hotspots`` command line: its subcommands and their flags."""

from __future__ import annotations

import argparse
from typing import TypeAlias

# argparse's type for the object add_subparsers() returns
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def parser(description: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand of ``hotspots``, in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(prog="hotspots", description=description)
    parser.add_argument("--config", help="TOML config file (or env HOTSPOTS_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    _file_commands(sub)
    _query_commands(sub)
    _worker_commands(sub)
    _replay_commands(sub)
    _demo_command(sub)
    _service_commands(sub)
    _backtest_commands(sub)
    _report_commands(sub)
    _category_commands(sub)
    return parser


def _file_commands(sub: Subparsers) -> None:
    """Loading a historical file into the store."""
    bf = sub.add_parser("backfill", help="load a historical CSV or JSON-lines file into the store")
    bf.add_argument("path", nargs="+", help="file(s) or quoted glob(s), read as one")
    bf.add_argument(
        "--profile",
        help=(
            "source profile (streamer/config/sources/NAME.toml); "
            "none for JSON lines of native events"
        ),
    )
    bf.add_argument("--force", action="store_true", help="load a file even if it was loaded")
    bf.add_argument("--quiet", action="store_true", help="no progress bar")
    bf.add_argument("--json", action="store_true", help="print the report as JSON")


def _query_commands(sub: Subparsers) -> None:
    """Reading the rankings: top cells, one cell, a time-of-week window."""
    top = sub.add_parser("top", help="print the current top cells")
    top.add_argument(
        "--horizon",
        default=None,
        help="default week; with --live default the two shortest, NAME,NAME for several",
    )
    top.add_argument("--resolution", type=int, default=None)
    top.add_argument("--limit", type=int, default=10)
    top.add_argument("--at", help="ISO 8601 time to decay scores to (default now)")
    top.add_argument("--json", action="store_true")
    top.add_argument(
        "--live", action="store_true", help="a live view (top 15 per horizon) until Ctrl-C"
    )

    cell = sub.add_parser("cell", help="print one cell's details")
    cell.add_argument("cell")
    cell.add_argument("--at")

    win = sub.add_parser("window", help="top cells for a time-of-week window")
    win.add_argument("--day", required=True, help="mon, tue, ... sun")
    win.add_argument("--from", dest="start", required=True, help="HH:MM local")
    win.add_argument("--to", dest="end", required=True, help="HH:MM local (may wrap midnight)")
    win.add_argument("--resolution", type=int, default=None)
    win.add_argument("--limit", type=int, default=10)
    win.add_argument("--at")
    win.add_argument("--json", action="store_true")


def _worker_commands(sub: Subparsers) -> None:
    """Checking the configuration, creating topics, running a worker."""
    sub.add_parser("check-config", help="validate the configuration and print it")
    sub.add_parser(
        "create-topics",
        help="create the engine's Kafka topics if missing (worker.partitions, "
        "kafka.replication_factor)",
    )

    run = sub.add_parser("run", help="run a worker (Kafka in, Redis out)")
    run.add_argument("--web-port", type=int, default=None, help="port of /metrics, /healthz")
    run.add_argument("--loglevel", default="info")
    run.add_argument(
        "--debug",
        action="append",
        default=[],
        metavar="LOGGER",
        help="debug lines of one logger at any --loglevel, e.g. hotspots.timers "
        "(every leader timer run: timer, holder, start, end); repeatable",
    )


def _replay_commands(sub: Subparsers) -> None:
    """Publishing a historical file to Kafka."""
    rp = sub.add_parser("replay", help="publish a historical file to Kafka")
    rp.add_argument("path", nargs="+", help="file(s) or quoted glob(s), read as one")
    rp.add_argument("--profile")
    speed = rp.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, default=60.0, help="multiple of real time")
    speed.add_argument("--max", action="store_true", help="as fast as possible")
    rp.add_argument("--limit", type=int, default=None, help="only the first N records")
    rp.add_argument("--quiet", action="store_true")


def _demo_command(sub: Subparsers) -> None:
    """The live demo on the bundled stack."""
    demo = sub.add_parser(
        "demo", help="a live demo: bundled broker, sample data, worker, replay, live view"
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=3600.0,
        help="replay speed, multiple of real time (default 3600: an hour of data per second)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself SECONDS after starting (set-up included)",
    )
    demo.add_argument(
        "--no-live", action="store_true", help="plain progress lines instead of the live view"
    )
    demo.add_argument(
        "--stale-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="warn STALE when seq has not moved for SECONDS",
    )
    demo.add_argument(
        "--namespace",
        default="demo",
        metavar="NAME",
        help="the demo's Redis namespace (default demo); one holding data the demo did "
        "not write is refused",
    )
    demo.add_argument(
        "--clean",
        action="store_true",
        help="delete the namespace an earlier run left (only if the demo wrote it) and exit",
    )


def _service_commands(sub: Subparsers) -> None:
    """The API, its tokens and one maintenance pass."""
    sv = sub.add_parser("serve", help="the HTTP API, live push and wall display")
    sv.add_argument("--host", default=None, help="default: api.host")
    sv.add_argument("--port", type=int, default=None, help="default: api.port")

    tk = sub.add_parser("token", help="make an API token and print its config entry")
    tk.add_argument("--role", choices=["display", "dispatch", "admin"], required=True)
    tk.add_argument("--name", default=None, help="the entry's name (default: the role)")

    mt = sub.add_parser("maintain", help="prune dead cells, re-base, trim the ledger once")
    mt.add_argument("--at")


def _backtest_commands(sub: Subparsers) -> None:
    """Backtests over a historical file: the alerts and the rankings."""
    ev = sub.add_parser(
        "evaluate-alerts",
        help="inject synthetic clusters into a historical file and score the alerts",
    )
    ev.add_argument("path", nargs="+", help="file(s) or quoted glob(s), read as one")
    ev.add_argument("--profile", help="source profile (streamer/config/sources/NAME.toml)")
    ev.add_argument(
        "--warmup-from", help="DATE: baselines are built from here (default: a year before --from)"
    )
    ev.add_argument(
        "--from", dest="start", help="DATE: evaluation start (default: a year before --to)"
    )
    ev.add_argument("--to", dest="end", help="DATE, inclusive (default: the file's last day)")
    ev.add_argument("--sizes", default="3,5,8", help="cluster sizes (events per cluster)")
    ev.add_argument("--radius-m", type=float, default=250.0, help="cluster radius in metres")
    ev.add_argument("--hours", type=float, default=6.0, help="cluster duration in hours")
    ev.add_argument("--clusters", type=int, default=60, help="clusters per size")
    ev.add_argument("--tick", default="5m", help="detection tick (duration)")
    ev.add_argument("--seed", type=int, default=1)
    ev.add_argument(
        "--jobs", type=int, default=None, help="engine runs in parallel (default: cores)"
    )
    ev.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ev.add_argument("--csv", metavar="PATH", help="write the results as CSV")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    acc = sub.add_parser(
        "evaluate",
        help="backtest the rankings: hit rate, PAI, PEI against baselines (--grid: tune)",
    )
    acc.add_argument("path", nargs="+", help="file(s) or quoted glob(s), read as one")
    acc.add_argument("--profile", help="source profile (streamer/config/sources/NAME.toml)")
    acc.add_argument("--from", dest="start", required=True, metavar="DATE", help="first day")
    acc.add_argument("--to", dest="end", required=True, metavar="DATE", help="last day, inclusive")
    acc.add_argument("--resolution", type=int, default=9, help="H3 resolution (default 9)")
    acc.add_argument("--period", choices=["day", "shift"], default="day")
    acc.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="the summary as JSON: to PATH, or alone to print it instead of the table",
    )
    acc.add_argument("--csv", metavar="PATH", help="per method, coverage and period")
    acc.add_argument("--png", metavar="PATH", help="PAI against coverage")
    acc.add_argument("--grid", action="store_true", help="tune a blend on --from .. --train-to")
    acc.add_argument(
        "--train-to", metavar="DATE", help="first day of the test span (the training span ends)"
    )
    acc.add_argument("--coverage", type=float, default=0.01, help="coverage the grid is tuned for")
    acc.add_argument("--quiet", action="store_true", help="no progress bar")


def _report_commands(sub: Subparsers) -> None:
    """Reports: patrol dosage, an operation's effect, the feedback check."""
    dr = sub.add_parser(
        "dosage-report",
        help="delivered vs planned patrol minutes per hot spot and day (table, CSV, PNG)",
    )
    dr.add_argument(
        "--from", dest="start", required=True, metavar="DATE", help="first local day, YYYY-MM-DD"
    )
    dr.add_argument("--to", dest="end", required=True, metavar="DATE", help="last day, inclusive")
    dr.add_argument(
        "--out",
        default=".",
        metavar="DIR",
        help="where dosage-FROM-TO.csv and .png are written (default: here)",
    )
    dr.add_argument("--json", action="store_true", help="print a JSON summary, not the table")
    asx = sub.add_parser(
        "assess",
        help="gross and net effect of an operation in target cells, displacement (WDQ), map",
    )
    asx.add_argument("path", nargs="+", help="file(s) or quoted glob(s), read as one")
    asx.add_argument("--profile", help="source profile (streamer/config/sources/NAME.toml)")
    asx.add_argument(
        "--targets", required=True, metavar="FILE", help="H3 cell ids: one a line, or a cell column"
    )
    asx.add_argument("--before", required=True, metavar="A..B", help="days, B inclusive")
    asx.add_argument("--after", required=True, metavar="C..D", help="days, D inclusive")
    asx.add_argument("--buffer-rings", type=int, default=2, help="rings around the targets (D)")
    control = asx.add_mutually_exclusive_group()
    control.add_argument("--control", metavar="FILE", help="control cells (C)")
    control.add_argument(
        "--control-rings",
        type=int,
        default=6,
        help="default control: rings buffer+1..N with events before (default 6)",
    )
    asx.add_argument("--png", metavar="FILE", help="write a map of the areas")
    asx.add_argument("--json", action="store_true", help="print JSON, not the table")

    fc = sub.add_parser(
        "feedback-check",
        help="how much of the flagged area comes from proactive/enforcement events",
    )
    fc.add_argument("path", nargs="+", help="file(s) or quoted glob(s), read as one")
    fc.add_argument("--profile", help="source profile (streamer/config/sources/NAME.toml)")
    fc.add_argument("--from", dest="start", required=True, metavar="DATE")
    fc.add_argument("--to", dest="end", required=True, metavar="DATE", help="inclusive")
    fc.add_argument("--resolution", type=int, default=10)
    fc.add_argument("--horizon", default="week", help="half-life from the config's horizons")
    fc.add_argument(
        "--coverage", type=float, default=0.01, help="share of cells with events flagged"
    )
    fc.add_argument("--json", action="store_true", help="print JSON, not the table")


def _category_commands(sub: Subparsers) -> None:
    """Building a force's harm table from its files."""
    cat = sub.add_parser(
        "categories",
        help="a file's category values, the harm rule each gets, suggestions; --write a table",
    )
    cat.add_argument("path", nargs="+", help="files or glob patterns, read as one")
    cat.add_argument("--profile", help="source profile (streamer/config/sources/NAME.toml)")
    cat.add_argument(
        "--config",
        default=argparse.SUPPRESS,  # else it would hide a --config given before the command
        help="TOML config file whose harm table is checked (as hotspots --config)",
    )
    cat.add_argument(
        "--write", metavar="FILE", help="write a starter [categories] table of every value"
    )
    cat.add_argument("--force", action="store_true", help="let --write overwrite FILE")
    cat.add_argument("--json", action="store_true", help="print JSON, not the table")
