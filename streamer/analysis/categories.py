"""``hotspots categories``: a force's category values against the harm table.

A new force's export names its offences in its own words; none of them is in
the bundled (Philadelphia) harm table, so every event would weigh the
default and the harm ranking would be a plain count. This command lists the
values of a file with their counts and the rule each gets now (``exact``:
the table names it; otherwise ``default``, or ``code`` / ``keyword`` when a
suggestion rule of ``streamer/config/category_rules.toml`` matches), and
writes a starter table to review (``--write``). Suggested weights are
medians of the bundled table's rows of the same kind, so the scale stays the
one of :file:`docs/harm.md`.
"""

from __future__ import annotations

import json
import re
import statistics
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from rich.table import Table

from streamer import app
from streamer.adapters.files import (
    SourceProfile,
    concat_columns,
    load_profile,
    read_columns,
)
from streamer.analysis.reading import existing_files
from streamer.core.weights import CategoryWeight
from streamer.settings import CONFIG_DIR, Settings
from streamer.usage import UsageError

RULES_PATH = CONFIG_DIR / "category_rules.toml"
REFERENCE_PATH = CONFIG_DIR / "categories.toml"  # the bundled (Philadelphia) harm table
SCHEMES = {"ucr": "UCR", "nibrs": "NIBRS"}
RULE_NAMES = ("exact", "code", "keyword", "default")
_CODES_SHOWN = 3  # a value's most frequent codes kept in the listing
_NIBRS_SHAPE = re.compile(r"\d{2}[0-9A-Z]")


@dataclass(frozen=True, slots=True)
class CategoryOptions:
    """``hotspots categories`` flags, as given."""

    paths: tuple[str, ...]
    profile: str | None = None
    write_path: str | None = None
    force: bool = False
    as_json: bool = False


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class CodeRule:
    """A ``[[code]]`` rule: codes of one scheme and what they suggest."""

    scheme: str
    codes: frozenset[str]
    prefixes: tuple[str, ...]
    span: tuple[int, int] | None  # numeric, inclusive
    outcome: CategoryWeight

    def matches(self, code: str) -> bool:
        """Whether ``code`` (normalised: stripped, upper case) is one of this rule's."""
        if code in self.codes or any(code.startswith(p) for p in self.prefixes):
            return True
        if self.span is None or not code.isdigit():
            return False
        return self.span[0] <= int(code) <= self.span[1]


@dataclass(frozen=True, slots=True)
class KeywordRule:
    """A ``[[keyword]]`` rule: words (whole, any case) and what they suggest."""

    words: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    outcome: CategoryWeight

    def match(self, value: str) -> str | None:
        """The first of the rule's words found in ``value``, or None."""
        for word, pattern in zip(self.words, self.patterns, strict=True):
            if pattern.search(value):
                return word
        return None


@dataclass(frozen=True, slots=True)
class SuggestionRules:
    """Every rule of the rules file, in the order they are tried."""

    codes: tuple[CodeRule, ...]
    keywords: tuple[KeywordRule, ...]


@dataclass(frozen=True, slots=True)
class Suggestion:
    """What a rule suggests for a value the harm table does not name."""

    rule: str  # "code" or "keyword"
    matched: str  # the word, or the code
    scheme: str | None  # of a code: "ucr" or "nibrs"
    outcome: CategoryWeight

    @property
    def reason(self) -> str:
        """Which rule matched, e.g. ``keyword 'burglary'``."""
        if self.rule == "code" and self.scheme is not None:
            return f"{SCHEMES[self.scheme]} code {self.matched!r}"
        return f"{self.rule} {self.matched!r}"


def word_pattern(phrase: str) -> re.Pattern[str]:
    """``phrase`` as whole words, any case; its words may be joined by spaces,
    hyphens or slashes.

    >>> bool(word_pattern("break and enter").search("Break-and-Enter Commercial"))
    True
    >>> bool(word_pattern("theft").search("Thefts"))
    False
    """
    body = r"[\s/-]+".join(re.escape(part) for part in phrase.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def load_rules(path: Path = RULES_PATH, reference_path: Path = REFERENCE_PATH) -> SuggestionRules:
    """The suggestion rules of ``path``, their weights taken from the rows
    of ``reference_path`` each names (``like``). Raises ``ValueError`` naming
    the file and the rule when a rule is malformed."""
    with reference_path.open("rb") as handle:
        reference = tomllib.load(handle).get("categories", {})
    with path.open("rb") as handle:
        raw = tomllib.load(handle)
    codes = []
    for number, entry in enumerate(raw.get("code", []), start=1):
        where = f"{path}: [[code]] rule {number}"
        scheme = entry.get("scheme")
        if scheme not in SCHEMES:
            raise ValueError(f"{where}: scheme {scheme!r}: use one of {sorted(SCHEMES)}")
        span = entry.get("range")
        if span is not None and (len(span) != 2 or span[0] > span[1]):
            raise ValueError(f"{where}: range {span!r}: expected [low, high]")
        codes.append(
            CodeRule(
                scheme=scheme,
                codes=frozenset(str(c).strip().upper() for c in entry.get("codes", [])),
                prefixes=tuple(str(p).strip().upper() for p in entry.get("prefixes", [])),
                span=None if span is None else (int(span[0]), int(span[1])),
                outcome=_outcome(entry, reference, where),
            )
        )
    keywords = []
    for number, entry in enumerate(raw.get("keyword", []), start=1):
        where = f"{path}: [[keyword]] rule {number}"
        words = tuple(str(w).lower() for w in entry.get("words", []))
        if not words:
            raise ValueError(f"{where}: no words")
        keywords.append(
            KeywordRule(
                words, tuple(word_pattern(w) for w in words), _outcome(entry, reference, where)
            )
        )
    return SuggestionRules(tuple(codes), tuple(keywords))


def _outcome(entry: Mapping[str, Any], reference: Mapping[str, Any], where: str) -> CategoryWeight:
    """A rule's family, the median weight of its ``like`` rows, and their
    shared flags unless the rule sets its own."""
    like = entry.get("like", [])
    missing = [name for name in like if name not in reference]
    if not like or missing:
        raise ValueError(f"{where}: like {like!r}: each must name a row of the bundled table")
    rows = [reference[name] for name in like]
    return CategoryWeight(
        weight=float(statistics.median(float(r.get("weight", 1.0)) for r in rows)),
        family=str(entry.get("family", "other")),
        include=bool(entry.get("include", all(r.get("include", True) for r in rows))),
        enforcement=bool(entry.get("enforcement", all(r.get("enforcement", False) for r in rows))),
    )


def code_scheme(codes: Iterable[str]) -> str | None:
    """The coding scheme of a file's codes: ``ucr`` when every one is a
    number divisible by 100 (UCR summary codes x 100), ``nibrs`` when every
    one has the NIBRS shape (two digits and a digit or letter) and some have
    a letter; None otherwise (no codes, or the force's own), when no code
    rule applies.

    >>> code_scheme(["600", "1400"]), code_scheme(["23F", "13B", "520"])
    ('ucr', 'nibrs')
    >>> code_scheme(["63", "245"]), code_scheme(["DISTP"]), code_scheme(["", " "])
    (None, None, None)
    """
    given = {c for c in (normalise_code(c) for c in codes) if c}
    if not given:
        return None
    if all(c.isdigit() and int(c) % 100 == 0 for c in given):
        return "ucr"
    if all(_NIBRS_SHAPE.fullmatch(c) for c in given) and any(not c.isdigit() for c in given):
        return "nibrs"
    return None


def normalise_code(code: object) -> str:
    """A code as matched: text, stripped, upper case (None becomes ``""``)."""
    return "" if code is None else str(code).strip().upper()


def suggest(
    value: str, codes: Sequence[str], scheme: str | None, rules: SuggestionRules
) -> Suggestion | None:
    """The suggestion for a category ``value`` whose rows carry ``codes``
    (most frequent first): the first code rule of ``scheme`` that matches its
    most frequent code, else the first keyword rule whose words are in
    ``value``. Only the most frequent code counts: a value's rare codes are
    often miscodings."""
    dominant = next((c for c in (normalise_code(c) for c in codes) if c), None)
    if scheme is not None and dominant is not None:
        for rule in rules.codes:
            if rule.scheme == scheme and rule.matches(dominant):
                return Suggestion("code", dominant, scheme, rule.outcome)
    for keyword in rules.keywords:
        word = keyword.match(value)
        if word is not None:
            return Suggestion("keyword", word, None, keyword.outcome)
    return None


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class ValueCounts:
    """The category values of one or more files."""

    counts: Counter[str]  # events (rows) per non-empty value
    codes: dict[str, Counter[str]]  # value -> its rows' non-empty codes
    rows: int
    without_category: int  # rows with an empty category (the engine rejects them)


def read_values(paths: Sequence[str], profile: SourceProfile | None) -> ValueCounts:
    """Count the category values of ``paths`` (files or glob patterns, each
    file once) read as one through ``profile`` (None: native JSON lines), and
    the codes of each value's rows (the profile's ``category_code`` column,
    native events' ``category_code``)."""
    counts: Counter[str] = Counter()
    codes: dict[str, Counter[str]] = {}
    rows = 0
    for path in existing_files(paths):
        try:
            cols = concat_columns(read_columns(path, profile))
        except (ValueError, pa.ArrowInvalid) as exc:
            raise UsageError(str(exc)) from None
        rows += len(cols)
        counts.update(cols.categories.tolist())
        pairs = zip(cols.categories.tolist(), cols.category_codes.tolist(), strict=True)
        for (value, code), n in Counter(pairs).items():
            if code := normalise_code(code):
                codes.setdefault(value, Counter())[code] += n
    without = counts.pop("", 0)
    codes.pop("", None)
    return ValueCounts(counts, codes, rows, without)


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True, slots=True)
class ValueRow:
    """One category value: its events, the rule it gets now, a suggestion."""

    value: str
    count: int
    rule: str  # exact | code | keyword | default
    now: CategoryWeight  # the table's row for it now (the default when unknown)
    weight_now: float  # what a reported event of it weighs now
    codes: tuple[str, ...]  # its most frequent codes
    suggestion: Suggestion | None  # for values the table does not name


def listing(counts: ValueCounts, settings: Settings, rules: SuggestionRules) -> list[ValueRow]:
    """Every value, most frequent first (ties by name)."""
    table = app.weight_table(settings)
    scheme = code_scheme(c for per_value in counts.codes.values() for c in per_value)
    out = []
    for value, count in sorted(counts.counts.items(), key=lambda item: (-item[1], item[0])):
        codes = tuple(c for c, _ in counts.codes.get(value, Counter()).most_common())
        rule = settings.category(value)
        exact = value != "default" and value in settings.categories
        suggestion = None if exact else suggest(value, codes, scheme, rules)
        out.append(
            ValueRow(
                value=value,
                count=count,
                rule="exact" if exact else suggestion.rule if suggestion else "default",
                now=CategoryWeight(rule.weight, rule.family, rule.include, rule.enforcement),
                weight_now=table.weigh(value, "reported").weight,
                codes=codes[:_CODES_SHOWN],
                suggestion=suggestion,
            )
        )
    return out


def summary(rows: Sequence[ValueRow]) -> dict[str, dict[str, int]]:
    """Values and events per rule."""
    return {
        name: {
            "values": sum(1 for r in rows if r.rule == name),
            "events": sum(r.count for r in rows if r.rule == name),
        }
        for name in RULE_NAMES
    }


def _weight_json(rule: CategoryWeight) -> dict[str, Any]:
    return {
        "weight": rule.weight,
        "family": rule.family,
        "include": rule.include,
        "enforcement": rule.enforcement,
    }


def as_json(rows: Sequence[ValueRow]) -> list[dict[str, Any]]:
    """The listing as JSON-able dicts."""
    out = []
    for r in rows:
        s = r.suggestion
        out.append(
            {
                "value": r.value,
                "count": r.count,
                "rule": r.rule,
                "weight": r.weight_now,
                "family": r.now.family,
                "now": _weight_json(r.now),
                "codes": list(r.codes),
                "suggestion": None
                if s is None
                else {
                    "rule": s.rule,
                    "matched": s.matched,
                    "scheme": s.scheme,
                    "reason": s.reason,
                    **_weight_json(s.outcome),
                },
            }
        )
    return out


def listing_table(rows: Sequence[ValueRow], title: str) -> Table:
    """The listing as a rich table."""
    table = Table(title=title)
    heads = ("value", "events", "rule", "weight", "family", "suggested", "family ", "because")
    for head in heads:
        table.add_column(
            head, justify="right" if head in ("events", "weight", "suggested") else "left"
        )
    for r in rows:
        s = r.suggestion
        table.add_row(
            r.value,
            f"{r.count:,}",
            r.rule,
            f"{r.weight_now:g}",
            r.now.family,
            "" if s is None else f"{s.outcome.weight:g}",
            "" if s is None else s.outcome.family,
            "" if s is None else s.reason,
        )
    return table


# --------------------------------------------------------------------------- starter table


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string.

    >>> toml_string('Break "and" Enter')
    '"Break \\\\"and\\\\" Enter"'
    """
    # JSON's escapes are all TOML's; DEL is the one control character JSON leaves raw
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _table_lines(header: str, rule: CategoryWeight, note: str | None) -> list[str]:
    lines = [header]
    if note is not None:
        lines.append(f"# {note}")
    return [
        *lines,
        f"weight = {float(rule.weight)!r}",
        f"family = {toml_string(rule.family)}",
        f"include = {str(rule.include).lower()}",
        f"enforcement = {str(rule.enforcement).lower()}",
        "",
    ]


def starter_toml(rows: Sequence[ValueRow], settings: Settings, source: str) -> str:
    """A ``[categories."..."]`` table for every value: rows the harm table
    names are copied, suggestions and unmatched values are marked for review.
    The text loads as a config file (``--config``)."""
    d = settings.default_category
    default = CategoryWeight(d.weight, d.family, d.include, d.enforcement)
    lines = [
        f"# Harm table for {source}, written by `hotspots categories`.",
        '# Rows marked "review" are suggestions or fall-backs: check each weight (days of',
        "# imprisonment, docs/harm.md) and family before the table ranks anything.",
        "# Use it as the force's config, or paste it into one: hotspots --config FILE ...",
        "",
        *_table_lines("[categories.default]", default, None),
    ]
    for r in rows:
        header = f"[categories.{toml_string(r.value)}]  # {r.count} events"
        if r.value == "default":  # the name of the fall-back row: a row of its own would replace it
            lines += ['# the value "default" always gets [categories.default]: review', ""]
        elif r.rule == "exact":
            lines += _table_lines(header, r.now, None)
        elif r.suggestion is not None:
            note = f"suggested ({r.suggestion.reason}): review"
            lines += _table_lines(header, r.suggestion.outcome, note)
        else:
            unmatched = CategoryWeight(d.weight, "other", d.include, d.enforcement)
            lines += _table_lines(header, unmatched, "no rule matched: review")
    return "\n".join(lines)


def write_starter(path: str, text: str, *, force: bool) -> None:
    """Write the starter table; an existing file only with ``force``."""
    target = Path(path)
    if target.exists() and not force:
        raise UsageError(f"--write: {path} exists; use --force to overwrite it")
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--write: cannot write {path}: {exc.strerror}") from None


# --------------------------------------------------------------------------- command


def main(options: CategoryOptions, settings: Settings) -> int:
    """Run ``hotspots categories``; returns its exit code."""
    try:
        profile = load_profile(options.profile) if options.profile else None
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--profile: {exc}") from None
    code_column = profile.category_code if profile else "category_code"
    counts = read_values(options.paths, profile)
    if not counts.counts:
        raise UsageError(f"{', '.join(options.paths)}: no row has a category")
    rows = listing(counts, settings, load_rules())
    source = ", ".join(Path(p).name for p in options.paths)
    if options.write_path is not None:
        write_starter(options.write_path, starter_toml(rows, settings, source), force=options.force)
    totals = summary(rows)
    scheme = code_scheme(c for v in counts.codes.values() for c in v)
    if options.as_json:
        report = {
            "paths": list(options.paths),
            "profile": options.profile,
            "code_column": code_column,
            "code_scheme": scheme,
            "rows": counts.rows,
            "rows_without_category": counts.without_category,
            "summary": totals,
            "categories": as_json(rows),
            "written": options.write_path,
        }
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    _print_report(rows, counts, totals, scheme, source, options.write_path)
    return 0


def _print_report(
    rows: Sequence[ValueRow],
    counts: ValueCounts,
    totals: Mapping[str, Mapping[str, int]],
    scheme: str | None,
    source: str,
    written: str | None,
) -> None:
    from streamer.analysis.assess import report_console

    console = report_console()
    title = f"Category values of {source} ({counts.rows:,} rows; weight: a reported event now)"
    console.print(listing_table(rows, title))
    unknown = sum(totals[n]["events"] for n in ("code", "keyword", "default"))
    total = max(sum(r.count for r in rows), 1)
    notes = [
        f"{totals['exact']['values']} values are in the harm table; "
        f"{len(rows) - totals['exact']['values']} are not ({unknown / total:.0%} of events) "
        "and weigh the default now",
        "suggested weights are medians of the bundled table's rows of the same kind: "
        "review every one before use (docs/harm.md)",
    ]
    if counts.codes and scheme is None:
        notes.append(
            "the codes of the profile's category_code column are neither UCR x 100 nor NIBRS: "
            "no code rule applies"
        )
    if counts.without_category:
        notes.append(f"{counts.without_category:,} rows have no category (the engine rejects them)")
    notes.append(
        f"starter table written to {written}"
        if written
        else "--write FILE writes a starter table of every value"
    )
    for note in notes:
        console.print(f"[dim]{note}[/dim]", highlight=False, soft_wrap=True)
