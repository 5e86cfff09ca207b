"""The settings' own defaults agree with streamer/config/default.toml, so a
Settings built without the file (a library caller, a test) behaves as the
engine does."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from streamer.settings import CONFIG_DIR, ConfigError, Settings, load_settings

RAW = tomllib.loads((CONFIG_DIR / "default.toml").read_text())
KEYS = [
    (section, key)
    for section, values in RAW.items()
    if isinstance(values, dict)
    for key, value in values.items()
    if not isinstance(value, dict)
]


def value(settings: Settings, section: str, key: str) -> object:
    part = getattr(settings, section)
    return part[key] if isinstance(part, dict) else getattr(part, key)


@pytest.mark.parametrize("section, key", KEYS)
def test_a_default_in_the_file_is_the_models_default(section: str, key: str) -> None:
    from_file = value(load_settings(environ={}), section, key)
    bare = value(Settings.model_validate({}), section, key)
    assert bare == from_file, f"[{section}] {key}: model {bare!r}, default.toml {from_file!r}"


def test_the_file_has_keys_to_compare() -> None:
    assert ("store", "ledger_retention") in KEYS and len(KEYS) > 50


def test_a_renamed_key_names_its_new_name(tmp_path: Path) -> None:
    config = tmp_path / "old.toml"
    config.write_text('[dosage]\nkoper_min = "12m"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    message = str(info.value)
    assert "'dosage.koper_min' is now 'dosage.koper_visit'" in message
    assert str(config) in message
    config.write_text('[dosage]\nkoper_visit = "12m"\n')
    assert load_settings(config, environ={}).dosage.koper_visit == 720.0


def test_paths_in_a_config_file_are_relative_to_it(tmp_path: Path) -> None:
    force = tmp_path / "force"
    force.mkdir()
    config = force / "force.toml"
    config.write_text(
        '[events]\nboundary = "outline.geojson"\n[display]\ndistricts = "d.geojson"\n'
    )
    settings = load_settings(config, environ={})
    assert settings.events.boundary == str(force / "outline.geojson")
    assert settings.display.districts == str(force / "d.geojson")
    config.write_text('[events]\nboundary = "auto"\n')
    assert load_settings(config, environ={}).events.boundary == "auto"
    # an override (a command-line flag) is taken as given
    assert load_settings(
        environ={}, overrides={"events": {"boundary": "x.geojson"}}
    ).events.boundary == ("x.geojson")


def test_no_default_names_a_force_or_its_outline() -> None:
    settings = load_settings(environ={})
    assert settings.events.boundary is None and settings.display.districts is None
    assert settings.api.name == ""
    old = load_settings(environ={}, overrides={"display": {"districts": "a.geojson"}})
    assert old.display.districts == "a.geojson"
    with pytest.raises(ConfigError, match=re.escape("'api.boundary' is now 'display.districts'")):
        load_settings(environ={}, overrides={"api": {"boundary": "a.geojson"}})
