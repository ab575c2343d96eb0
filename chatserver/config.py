"""config.toml → ``Config`` (``chatserver/settings.py``); every key can be overridden by
CHATSERVER_<SECTION>_<KEY>.

The schema and every default, with its reason, live in ``settings.py`` (pure, so the
core may import it); this module reads files and the environment, and re-exports the
schema so that its importers keep working. ``config.toml`` documents the same keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from chatserver.core.events import Resource
from chatserver.settings import (
    DEFAULT_EMERGENCY,
    DEFAULT_NOTICES,
    DEFAULT_RESOURCES,
    AuthConfig,
    BrokerConfig,
    Config,
    LimitsConfig,
    ModelConfig,
    ModerationConfig,
    RetentionConfig,
    RoomsConfig,
    RoomSeed,
    ServerConfig,
    StoreConfig,
    packaged,
)

__all__ = [
    "AuthConfig", "BrokerConfig", "Config", "ConfigError", "LimitsConfig", "ModelConfig",
    "ModerationConfig", "RetentionConfig", "RoomSeed", "RoomsConfig", "ServerConfig",
    "StoreConfig", "load_config", "packaged", "read_rule_files",
]


class ConfigError(Exception):
    """A config value that cannot be used; the message names the key."""


T = TypeVar("T")


def _coerce(value: Any, like: Any, key: str) -> Any:
    """Coerce an env string (or TOML value) to the type of the default ``like``."""
    try:
        if isinstance(like, bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(like, int):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if isinstance(like, float):
            return float(value)
        if isinstance(like, tuple):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if isinstance(like, str):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot use {value!r}") from None
    return value


def _unknown(key: str, where: str, known: Iterable[str]) -> ConfigError:
    """An unknown section (``where`` empty) or key, named, with the nearest valid name."""
    names = sorted(known)
    near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}?" if near else f"valid: {', '.join(names)}"
    what = f"key {key!r} in [{where}]" if where else f"section [{key}]"
    return ConfigError(f"unknown {what}; {hint}")


def _known(raw: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    known = set(known)
    for key in raw:
        if key not in known:
            raise _unknown(key, where, known)


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table, not {value!r}")
    return value


def _check_toml_type(value: Any, like: Any, key: str) -> None:
    """A value written in the TOML file must have the default's type (env strings are
    coerced instead): ``port = "8080"`` or ``hsts = 1`` is refused, naming the key."""
    if isinstance(like, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(like, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(like, float):
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(like, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        kind = "a list of strings"
    elif isinstance(like, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise ConfigError(f"{key}: expected {kind}, not {value!r}")


def _section(cls: type[T], raw: Mapping[str, Any], name: str, env: Mapping[str, str]) -> T:
    default = cls()
    values: dict[str, Any] = {}
    _known(raw, (f.name for f in dataclasses.fields(cls)), name)  # type: ignore[arg-type]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        like = getattr(default, f.name)
        env_key = f"CHATSERVER_{name}_{f.name}".upper().replace(".", "_")
        if env_key in env:
            values[f.name] = _coerce(env[env_key], like, f"{name}.{f.name}")
        elif f.name in raw:
            _check_toml_type(raw[f.name], like, f"{name}.{f.name}")
            values[f.name] = _coerce(raw[f.name], like, f"{name}.{f.name}")
    return dataclasses.replace(default, **values)  # type: ignore[type-var]


def _thresholds(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a table of head = threshold")
    out = {}
    for head, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}.{head}: a threshold between 0 and 1, not {value!r}")
        out[str(head)] = float(value)
    return out


def _model_config(raw: dict[str, Any], env: Mapping[str, str]) -> ModelConfig:
    thresholds = _thresholds(raw.pop("thresholds", {}), "moderation.model.thresholds")
    profiles_raw = raw.pop("profiles", {})
    if not isinstance(profiles_raw, dict):
        raise ConfigError("moderation.model.profiles: a table per room profile")
    profiles = {name: _thresholds(t, f"moderation.model.profiles.{name}")
                for name, t in profiles_raw.items()}
    model = _section(ModelConfig, raw, "moderation.model", env)
    if model.mode not in ("live", "shadow"):
        raise ConfigError(f"moderation.model.mode: 'live' or 'shadow', not {model.mode!r}")
    if model.encoder not in ("process", "thread"):
        raise ConfigError("moderation.model.encoder: 'process' or 'thread', not "
                          f"{model.encoder!r}")
    return dataclasses.replace(model, thresholds=thresholds, profile_thresholds=profiles)


def load_config(path: str | Path | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (if given and present) and apply environment overrides.

    Raises:
        ConfigError: an unknown section or key (with the nearest valid name), a value of
            the wrong type, or a file that is not TOML, named.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None and Path(path).exists():
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    _known(raw, SECTIONS, "")
    for name in ("server", "auth", "broker", "store", "limits", "moderation", "rooms",
                 "retention", "notices"):
        _table(raw, name)
    mod_raw = dict(_table(raw, "moderation"))
    profiles_raw = mod_raw.pop("profiles", None)
    if profiles_raw is not None:
        if not isinstance(profiles_raw, dict):
            raise ConfigError("[moderation.profiles] must be a table per room profile")
        for name, p in profiles_raw.items():
            if not isinstance(p, dict):
                raise ConfigError(f"[moderation.profiles.{name}] must be a table")
            _known(p, ("disable",), f"moderation.profiles.{name}")
            _check_toml_type(p.get("disable", []), (), f"moderation.profiles.{name}.disable")
    model = _model_config(dict(_table(mod_raw, "model")), env)
    mod_raw.pop("model", None)
    _check_lists(raw)
    moderation = _section(ModerationConfig, mod_raw, "moderation", env)
    moderation = dataclasses.replace(moderation, model=model)
    if profiles_raw is not None:
        profiles = {name: frozenset(p.get("disable", [])) for name, p in profiles_raw.items()}
        moderation = dataclasses.replace(moderation, profiles=profiles)
    resources = tuple(Resource(**r) for r in raw["resources"]) if "resources" in raw \
        else DEFAULT_RESOURCES
    notices = dict(DEFAULT_NOTICES)
    notices.update(raw.get("notices", {}))
    seeds = tuple(
        RoomSeed(id=r["id"], title=r["title"], age_bands=tuple(r.get("age_bands", ())),
                 profile=r.get("profile", "default"),
                 require_facilitator=r.get("require_facilitator"))
        for r in raw.get("room", []))
    store = _section(StoreConfig, raw.get("store", {}), "store", env)
    if store.sqlite_synchronous not in ("normal", "full"):
        raise ConfigError("store.sqlite_synchronous: 'normal' or 'full', not "
                          f"{store.sqlite_synchronous!r}")
    server = _section(ServerConfig, raw.get("server", {}), "server", env)
    _check_networks(server.trusted_proxies, "server.trusted_proxies")
    return Config(
        server=server,
        auth=_section(AuthConfig, raw.get("auth", {}), "auth", env),
        broker=_section(BrokerConfig, raw.get("broker", {}), "broker", env),
        store=store,
        limits=_section(LimitsConfig, raw.get("limits", {}), "limits", env),
        moderation=moderation,
        rooms=_section(RoomsConfig, raw.get("rooms", {}), "rooms", env),
        retention=_section(RetentionConfig, raw.get("retention", {}), "retention", env),
        resources=resources,
        notices=notices,
        emergency_procedure=raw.get("emergency_procedure", DEFAULT_EMERGENCY),
        seed_rooms=seeds,
    )


SECTIONS: frozenset[str] = frozenset({
    "server", "auth", "broker", "store", "limits", "moderation", "rooms", "retention",
    "resources", "notices", "emergency_procedure", "room"})
"""The top-level names of config.toml; anything else stops start-up."""


def _check_networks(values: Iterable[str], key: str) -> None:
    """Each value an IP address or a network written without host bits (``10.0.0.1/8``
    is a typo for an address or for ``10.0.0.0/8``: refused rather than guessed)."""
    for value in values:
        try:
            ipaddress.ip_network(value)
        except ValueError as e:
            raise ConfigError(f"{key}: {value!r} is not an IP address or network ({e})"
                              ) from None


def _check_lists(raw: Mapping[str, Any]) -> None:
    """``[[resources]]``, ``[[room]]``, ``[notices]`` and ``emergency_procedure``."""
    resource_keys = [f.name for f in dataclasses.fields(Resource)]
    for kind, keys, required in (("resources", resource_keys, ("name",)),
                                 ("room", [f.name for f in dataclasses.fields(RoomSeed)],
                                  ("id", "title"))):
        entries = raw.get(kind, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"[[{kind}]] must be an array of tables")
        for n, entry in enumerate(entries, 1):
            _known(entry, keys, f"{kind} #{n}")
            for key in required:
                if key not in entry:
                    raise ConfigError(f"[[{kind}]] #{n}: {key!r} is missing")
            for key, value in entry.items():
                if key == "age_bands":
                    _check_toml_type(value, (), f"{kind}.{key}")
                elif key == "require_facilitator":
                    _check_toml_type(value, True, f"{kind}.{key}")
                else:
                    _check_toml_type(value, "", f"{kind}.{key}")
    notices = raw.get("notices", {})
    _known(notices, DEFAULT_NOTICES, "notices")
    for key, value in notices.items():
        _check_toml_type(value, "", f"notices.{key}")
    if "emergency_procedure" in raw:
        _check_toml_type(raw["emergency_procedure"], "", "emergency_procedure")


def read_rule_files(directory: str | Path) -> dict[str, str]:
    """Read every ``*.toml`` in the rules directory: name → text."""
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(directory).glob("*.toml"))}
