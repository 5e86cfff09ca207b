"""The ``hotspots`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import orjson

from streamer import app, cli_args
from streamer.adapters import keys
from streamer.adapters.store import EngineClock
from streamer.core import decay, weekhours
from streamer.settings import ConfigError, Settings, load_settings
from streamer.usage import UsageError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _fail(message: str) -> NoReturn:
    print(f"hotspots: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _parse_at(text: str | None) -> float:
    if text is None:
        return time.time()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at: not an ISO 8601 time: {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


async def _at(args: argparse.Namespace, settings: Settings, store: Any) -> float:
    """``--at``, else the engine's now: the wall clock, or with ``time.clock =
    "event"`` the newest event time in the store."""
    if args.at is not None:
        return _parse_at(args.at)
    return await EngineClock(store, settings.time.clock).refresh()


def _print_token(role: str, name: str) -> None:
    import secrets

    from streamer.api import token_digest

    token = secrets.token_urlsafe(32)
    print(f"# token (give it to the client; it is not stored anywhere): {token}")
    print(f"[api.tokens.{name}]")
    print(f'token_sha256 = "{token_digest(token)}"')
    print(f'role = "{role}"')


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = cli_args.parser(__doc__).parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        _fail(str(exc))
    if args.command == "run":
        _run_worker(args, settings)
        return
    if args.command == "token":
        _print_token(args.role, args.name or args.role)
        return
    if args.command == "serve":
        if not settings.api.tokens:
            _fail(
                "api.tokens is empty: nothing could call the API. Make a token with "
                "`hotspots token --role display` and put the entry it prints in your config"
            )
        from streamer.api import serve

        serve(settings, args.host, args.port)
        return
    if args.command == "demo":
        from streamer.local.demo import DemoOptions
        from streamer.local.demo import main as demo_main

        if args.speed <= 0:
            _fail("--speed must be positive")
        raise SystemExit(
            demo_main(
                DemoOptions(
                    speed=args.speed,
                    duration_s=args.duration,
                    live=not args.no_live,
                    stale_after_s=args.stale_after,
                    namespace=args.namespace,
                    config=args.config,
                    clean=args.clean,
                )
            )
        )
    if args.command == "evaluate-alerts":
        _evaluate_alerts(args, settings)
    if args.command == "evaluate":
        _evaluate(args, settings)
    if args.command in ("assess", "feedback-check"):
        _assess(args, settings)
    if args.command == "categories":
        _categories(args, settings)
    try:
        code = asyncio.run(_dispatch(args, settings))
    except UsageError as exc:
        _fail(str(exc))
    except KeyError as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))
    raise SystemExit(code)


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "check-config":
        print(orjson.dumps(settings.model_dump(), option=orjson.OPT_INDENT_2).decode())
        return 0
    if args.command == "create-topics":
        created = app.ensure_topics(settings)
        print(f"created {', '.join(created) if created else 'nothing: every topic exists'}")
        return 0
    if args.command == "replay":
        return await asyncio.to_thread(_replay, args, settings)
    store = app.store(settings)
    try:
        if args.command == "backfill":
            return await _backfill(args, settings, store)
        if args.command == "top":
            if args.live:
                from streamer.services.live import run_top_live

                return await run_top_live(
                    settings,
                    store,
                    horizons=args.horizon.split(",") if args.horizon else None,
                    resolution=args.resolution,
                )
            args.horizon = args.horizon or "week"
            return await _top(args, settings, store)
        if args.command == "cell":
            details = await store.cell(args.cell, await _at(args, settings, store))
            if details is None:
                print(f"no data for cell {args.cell}", file=sys.stderr)
                return 1
            print(orjson.dumps(details, option=orjson.OPT_INDENT_2).decode())
            return 0
        if args.command == "window":
            return await _window(args, settings, store)
        if args.command == "dosage-report":
            return await _dosage_report(args, settings, store)
        if args.command == "maintain":
            at = await _at(args, settings, store)
            removed, deleted = await store.prune(at)
            forgotten = await store.trim_ledger(at)
            print(
                f"pruned {removed} ranking entries, deleted {deleted} cells, "
                f"forgot {forgotten} ledger entries"
            )
            return 0
        raise UsageError(f"unknown command {args.command}")
    finally:
        await store.client.aclose()


def _resolution(args: argparse.Namespace, settings: Settings) -> int:
    res: int = args.resolution if args.resolution is not None else max(settings.grid.resolutions)
    if res not in settings.grid.resolutions:
        raise UsageError(
            f"--resolution {res}: configured resolutions are "
            f"{settings.grid.resolutions} (key grid.resolutions)"
        )
    return res


async def _top(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    if args.horizon not in settings.horizons:
        raise UsageError(
            f"--horizon {args.horizon!r}: configured horizons are {sorted(settings.horizons)}"
        )
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    resolution = _resolution(args, settings)
    at_s = await _at(args, settings, store)
    rows = await store.top(args.horizon, resolution, args.limit, at_s)
    _print_ranked(rows, as_json=args.json)
    if rows:
        return 0
    reason = await _why_nothing(
        settings, store, args.horizon, resolution, at_s, at_given=args.at is not None
    )
    print(f"hotspots top: nothing to list: {reason}", file=sys.stderr)
    return 1


async def _why_nothing(
    settings: Settings, store: Any, horizon: str, resolution: int, at_s: float, *, at_given: bool
) -> str:
    """Why ``top`` lists no cell at ``at_s``, and what to do about it."""
    landmark_raw, watermark_raw = await store.client.hmget(
        keys.meta(store.prefix), [f"k:{horizon}", "watermark"]
    )
    best = await store.client.zrevrange(
        keys.rank(store.prefix, horizon, resolution), 0, 0, withscores=True
    )
    where = f"namespace {store.namespace!r} (store.namespace)"
    if watermark_raw is None and not best:
        return (
            f"{where} holds no events. Load some with `hotspots backfill PATH` or run a "
            "worker (`hotspots run`), or name the namespace that holds them "
            "(HOTSPOTS_STORE__NAMESPACE=NAME)."
        )
    if not best or landmark_raw is None:
        return f"the {horizon} ranking at resolution {resolution} of {where} is empty."
    score = decay.score_at(float(best[0][1]), at_s, store.horizons[horizon], int(landmark_raw))
    text = (
        f"every score of the {horizon} ranking at resolution {resolution} has decayed below "
        f"store.prune_below ({store.prune_below:g}) by {_iso(at_s)} (the best is {score:.3g})"
    )
    if watermark_raw is None:
        return text + "."
    newest = float(watermark_raw)
    text += f"; the newest event is of {_iso(newest)}, {_span(at_s - newest)} earlier."
    if at_given:
        return text + f" Choose an --at nearer the data, e.g. --at {_iso(newest)}."
    if settings.time.clock == "wall":
        return text + (
            ' Scores decay to the wall clock (time.clock = "wall"); for historical data decay '
            'them to the newest event: time.clock = "event" in the config (or '
            f"HOTSPOTS_TIME__CLOCK=event), or --at {_iso(newest)}."
        )
    return text


def _iso(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).isoformat(timespec="seconds")


def _span(seconds: float) -> str:
    """A rough length of time, e.g. ``412 days``.

    >>> _span(3 * 86400.0), _span(5400.0), _span(90.0), _span(-7200.0)
    ('3 days', '1.5 hours', '90 s', '-2 hours')
    """
    size = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if size >= 2 * 86400:
        return f"{sign}{size / 86400:.0f} days"
    if size >= 2 * 3600:
        return f"{sign}{size / 3600:.0f} hours"
    if size >= 3600:
        return f"{sign}{size / 3600:.1f} hours"
    return f"{sign}{size:.0f} s"


def _print_ranked(rows: Sequence[Any], *, as_json: bool) -> None:
    if as_json:
        print(
            orjson.dumps(
                [{"cell": r.cell, "rank": r.rank, "score": r.score} for r in rows]
            ).decode()
        )
    else:
        for r in rows:
            print(f"{r.rank:>4}  {r.cell}  {r.score:12.4f}")


def window_hours(day: str, start: str, end: str) -> list[int]:
    """:func:`streamer.core.weekhours.window_hours` (a day's full name or any
    case will do), a usage error naming the flag when the window breaks
    its rule.

    >>> window_hours("Friday", "22:00", "02:00")
    [118, 119, 120, 121]
    """
    flags = {"day": "--day", "from": "--from", "to": "--to"}
    try:
        return weekhours.window_hours(day.lower()[:3], start, end)
    except weekhours.WindowError as exc:
        given = day if exc.field == "day" else exc.value
        raise UsageError(f"{flags[exc.field]}: {exc.rule}, got {given!r}") from None


async def _window(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    hours = window_hours(args.day, args.start, args.end)
    rows = await store.window(
        _resolution(args, settings), hours, args.limit, await _at(args, settings, store)
    )
    _print_ranked(rows, as_json=args.json)
    return 0


def _one_or_many(paths: Sequence[str]) -> str | list[str]:
    """A command's file argument: one path as given, several as a list."""
    return paths[0] if len(paths) == 1 else list(paths)


def _files(paths: Sequence[str]) -> list[Path]:
    """The files the command line names (paths or quoted globs), each checked."""
    from streamer.analysis.reading import existing_files

    return existing_files(list(paths))


async def _backfill(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    from rich.progress import Progress as RichProgress

    from streamer.adapters.files import load_profile

    try:
        profile = load_profile(args.profile) if args.profile else None
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--profile: {exc}") from None
    files = _files(args.path)
    with RichProgress(disable=args.quiet or args.json, transient=True) as bar:
        task = bar.add_task("backfill", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        report = await app.backfill(
            settings,
            store,
            files,
            profile,
            now_s=time.time(),
            force=args.force,
            progress=progress,
        )
    if report.skipped_file:
        print(
            f"{' '.join(args.path)} was loaded into namespace {settings.store.namespace!r} before; "
            "nothing done (use --force to load it again)"
        )
        return 0
    summary = report.summary()
    from streamer.analysis.reading import profile_columns

    warnings = report.rows().warnings(profile_columns(args.profile))
    summary["warnings"] = warnings
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.unknown_cancel:
        print(
            f"warning: {report.unknown_cancel} cancels name events the store cannot place "
            "(its ledger no longer holds them, and they carry no time, place and category "
            "of an event it holds): nothing changed for them (see docs/corrections.md)",
            file=sys.stderr,
        )
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        for key, value in summary.items():
            print(f"{key:>24}: {value}")
    return 0


async def _dosage_report(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    from streamer.analysis.dosage_report import ReportOptions
    from streamer.analysis.dosage_report import main as report_main

    options = ReportOptions(start=args.start, end=args.end, out_dir=args.out, as_json=args.json)
    return await report_main(options, settings, store)


def _evaluate(args: argparse.Namespace, settings: Settings) -> NoReturn:
    from streamer.analysis.evaluate import EvaluateOptions
    from streamer.analysis.evaluate import main as evaluate_main

    options = EvaluateOptions(
        path=_one_or_many(args.path),
        start=args.start,
        end=args.end,
        profile=args.profile,
        resolution=args.resolution,
        period=args.period,
        json_path=args.json,
        csv_path=args.csv,
        png_path=args.png,
        grid=args.grid,
        train_to=args.train_to,
        coverage=args.coverage,
        quiet=args.quiet,
    )
    try:
        raise SystemExit(evaluate_main(options, settings))
    except UsageError as exc:
        _fail(str(exc))


def _evaluate_alerts(args: argparse.Namespace, settings: Settings) -> NoReturn:
    from streamer.analysis.evaluate_alerts import EvaluateOptions
    from streamer.analysis.evaluate_alerts import main as evaluate_main

    options = EvaluateOptions(
        path=_one_or_many(args.path),
        profile=args.profile,
        warmup_from=args.warmup_from,
        start=args.start,
        end=args.end,
        sizes=args.sizes,
        radius_m=args.radius_m,
        hours=args.hours,
        clusters=args.clusters,
        tick=args.tick,
        seed=args.seed,
        json_path=args.json,
        csv_path=args.csv,
        jobs=args.jobs,
        quiet=args.quiet,
    )
    try:
        raise SystemExit(evaluate_main(options, settings))
    except UsageError as exc:
        _fail(str(exc))


def _assess(args: argparse.Namespace, settings: Settings) -> NoReturn:
    from streamer.analysis.assess import AssessOptions, main_assess
    from streamer.analysis.feedback_check import FeedbackOptions, main_feedback

    try:
        if args.command == "assess":
            raise SystemExit(
                main_assess(
                    AssessOptions(
                        path=_one_or_many(args.path),
                        targets_path=args.targets,
                        before=args.before,
                        after=args.after,
                        profile=args.profile,
                        buffer_rings=args.buffer_rings,
                        control_path=args.control,
                        control_rings=args.control_rings,
                        png_path=args.png,
                        as_json=args.json,
                    ),
                    settings,
                )
            )
        raise SystemExit(
            main_feedback(
                FeedbackOptions(
                    path=_one_or_many(args.path),
                    start=args.start,
                    end=args.end,
                    profile=args.profile,
                    resolution=args.resolution,
                    horizon=args.horizon,
                    coverage=args.coverage,
                    as_json=args.json,
                ),
                settings,
            )
        )
    except UsageError as exc:
        _fail(str(exc))


def _categories(args: argparse.Namespace, settings: Settings) -> NoReturn:
    from streamer.analysis.categories import CategoryOptions
    from streamer.analysis.categories import main as categories_main

    options = CategoryOptions(
        paths=tuple(args.path),
        profile=args.profile,
        write_path=args.write,
        force=args.force,
        as_json=args.json,
    )
    try:
        raise SystemExit(categories_main(options, settings))
    except UsageError as exc:
        _fail(str(exc))


def _run_worker(args: argparse.Namespace, settings: Settings) -> None:
    from faust.worker import Worker

    from streamer.services.worker import build

    logging.basicConfig(level=args.loglevel.upper(), format=LOG_FORMAT)
    app.ensure_topics(settings)
    fapp, _, _ = build(settings, web_port=args.web_port)
    fapp.conf.loghandlers = [*fapp.conf.loghandlers, *_debug_handlers(args.debug, args.loglevel)]
    worker = Worker(fapp, loglevel=args.loglevel)
    worker.execute_from_commandline()


def _debug_handlers(names: Sequence[str], loglevel: str) -> list[logging.Handler]:
    """A handler for the named loggers' lines below ``loglevel``, which
    faust's own handler (at ``loglevel``) drops."""
    if not names:
        return []
    threshold = logging.getLevelName(loglevel.upper())

    def wanted(record: logging.LogRecord) -> bool:
        named = any(record.name == n or record.name.startswith(f"{n}.") for n in names)
        return named and record.levelno < threshold

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(wanted)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    return [handler]


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from itertools import islice

    from rich.progress import Progress as RichProgress

    from streamer.adapters.files import iter_records, load_profile
    from streamer.services.replay import replay

    try:
        profile = load_profile(args.profile) if args.profile else None
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--profile: {exc}") from None
    if args.speed is not None and args.speed <= 0:
        raise UsageError("--speed must be positive")
    app.ensure_topics(settings)
    k = settings.kafka
    records = iter_records(_files(args.path), profile)
    if args.limit is not None:
        records = islice(records, args.limit)
    with RichProgress(disable=args.quiet, transient=True) as bar:
        task = bar.add_task("replay", total=None)
        report = replay(
            records,
            bootstrap=k.bootstrap,
            topics={"incident": k.incidents_topic, "call": k.calls_topic},
            speed=None if args.max else args.speed,
            progress=lambda n: bar.update(task, completed=n),
            client_options=app.kafka_options(settings),
        )
    print(
        f"sent {report.sent} events in {report.seconds:.1f} s "
        f"({report.sent / max(report.seconds, 1e-9):.0f} events/s)"
    )
    return 0


if __name__ == "__main__":
    main()
