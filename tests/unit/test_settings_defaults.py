"""The settings' own defaults agree with streamer/config/default.toml, so a
Settings built without the file (a library caller, a test) behaves as the
engine does."""

from __future__ import annotations

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
