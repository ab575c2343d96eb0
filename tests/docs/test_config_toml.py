"""config.toml documents every key (README § Configuration): each section's keys and
every [notices] key, whose wording there is the default's (issue 15 § 4)."""

from __future__ import annotations

import dataclasses
import tomllib

from chatserver.config import Config, load_config
from tests.conftest import ROOT

CONFIG = ROOT / "config.toml"


def test_every_key_is_in_config_toml() -> None:
    raw = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    default = Config()
    for name in ("server", "auth", "broker", "store", "limits", "rooms", "retention"):
        section = getattr(default, name)
        missing = [f.name for f in dataclasses.fields(section) if f.name not in raw[name]]
        assert not missing, f"[{name}] lacks {missing}"
    assert set(raw["notices"]) == set(default.notices)


def test_the_notices_in_config_toml_are_the_defaults() -> None:
    assert dict(load_config(CONFIG, env={}).notices) == dict(Config().notices)
    assert "@" not in Config().notices["complaints"]  # no placeholder address (SG-14)
