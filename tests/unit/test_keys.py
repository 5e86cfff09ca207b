"""The key names: one owner (streamer.adapters.keys), the same in the Lua
scripts and in docs/redis.md's table."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

from streamer.adapters import keys

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "streamer" / "adapters" / "lua"
DOCS = ROOT / "docs" / "redis.md"

# a Lua concatenation that starts at the prefix: P .. ':meta', P .. ':rank:' .. h .. ':' .. res
_LUA_START = re.compile(r"(?<![\w.])P(?!\w)")
_LUA_PART = re.compile(r"\s*\.\.\s*(?:'([^']*)'|[A-Za-z_][\w.]*(?:\[[^\]]*\])*)")


def _parameters(family: Callable[..., str]) -> list[str]:
    return list(inspect.signature(family).parameters)[1:]


def template(family: Callable[..., str], prefix: str = "{NS}", wild: str | None = None) -> str:
    """The family's name with each varying part spelled as its parameter in
    capitals (``{NS}:rank:HORIZON:RES``), or as ``wild`` when given."""
    parts = [wild if wild is not None else p.upper() for p in _parameters(family)]
    return family(prefix, *parts)


def lua_names() -> dict[str, set[str]]:
    """Each name the scripts build from the prefix ``P``, varying parts as
    ``*`` (``P:rank:*:*``) -> the scripts that build it."""
    found: dict[str, set[str]] = {}
    for path in sorted(LUA.glob("*.lua")):
        for line in path.read_text().splitlines():
            code = line.split("--", 1)[0]
            for start in _LUA_START.finditer(code):
                name, at = "P", start.end()
                while (part := _LUA_PART.match(code, at)) is not None:
                    name += part.group(1) if part.group(1) is not None else "*"
                    at = part.end()
                if name != "P":
                    found.setdefault(name, set()).add(path.name)
    return found


def docs_names() -> set[str]:
    """The ``{NS}:...`` names in the first column of docs/redis.md's key table."""
    text = DOCS.read_text()
    section = text.split("## Keys", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            first = line.split("|")[1]
            names.update(re.findall(r"`(\{NS\}:[^`]*)`", first))
    return names


def test_every_public_function_is_a_family_or_a_prefix_helper() -> None:
    public = {
        name
        for name, value in vars(keys).items()
        if inspect.isfunction(value)
        and not name.startswith("_")
        and value.__module__ == keys.__name__
    }
    assert public - {"namespace_prefix", "every_key"} == {f.__name__ for f in keys.FAMILIES}


def test_each_family_has_a_docstring_and_its_own_name() -> None:
    for family in keys.FAMILIES:
        assert family.__doc__ and "\n" not in family.__doc__.strip(), family.__name__
    names = [template(f) for f in keys.FAMILIES]
    assert len(set(names)) == len(names)


def test_names_start_with_the_hash_tag_of_the_namespace() -> None:
    prefix = keys.namespace_prefix("force-7")
    assert prefix == "{force-7}"
    assert keys.rank(prefix, "week", 9) == "{force-7}:rank:week:9"
    assert keys.planned_cells(prefix, "2026-01-31") == "{force-7}:dosage:planned:2026-01-31"
    for family in keys.FAMILIES:
        assert template(family, prefix).startswith("{force-7}:"), family.__name__
    assert keys.every_key(prefix) == "{force-7}*"


def test_the_lua_scripts_spell_the_same_names() -> None:
    ours = {template(f, "P", "*") for f in keys.FAMILIES}
    theirs = lua_names()
    # the reader finds what the scripts touch (so this test can fail)
    assert {"P:meta", "P:rank:*:*", "P:cell:*", "P:how:*", "P:ledger:day:*"} <= set(theirs)
    assert {n: s for n, s in theirs.items() if n not in ours} == {}


def test_the_docs_table_lists_every_family_and_no_other() -> None:
    ours = {template(f) for f in keys.FAMILIES}
    documented = docs_names()
    assert len(documented) > 20
    assert sorted(documented - ours) == []
    assert sorted(ours - documented) == []


def test_no_other_module_spells_a_key_name() -> None:
    """Python code outside keys.py builds no key from the prefix by hand: a
    string that starts a key family after the prefix (``":meta"``,
    ``":rank:"``, ``"}:"``) or a ``.key(`` helper would bypass the owner."""
    words = {part for family in keys.FAMILIES for part in template(family).split(":")[1:2]}
    family = "|".join(sorted(map(re.escape, words)))
    spelled = re.compile(r"""["'](?:\}:|:(?:""" + family + r""")(?::|["']))|\.key\(""")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "streamer").rglob("*.py"))
        if path.name != "keys.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line.split("#", 1)[0])
    ]
    assert offenders == []
