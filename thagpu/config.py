"""One typed configuration for every stage, with documented defaults.

A TOML or YAML file overrides any subset::

    [io]
    max_voxels = 2e9

Unknown sections or keys are refused (a typo must not be silently ignored).
``config_hash`` identifies a configuration in every output it produced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

__all__ = ["IOConfig", "Config", "load_config", "config_hash"]


@dataclass(frozen=True)
class IOConfig:
    """Reading CT files."""

    #: Refuse images with more voxels than this before reading any pixel.
    max_voxels: float = 1.5e9


@dataclass(frozen=True)
class Config:
    """Every parameter of the pipeline; sections per stage."""

    io: IOConfig = field(default_factory=IOConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _merge(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"[{where}] must be a table of settings")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown setting '{where + '.' if where else ''}{key}' "
                             f"(known: {', '.join(sorted(known))})")
        default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING \
            else known[key].default
        if dataclasses.is_dataclass(default):
            kwargs[key] = _merge(type(default), value, f"{where + '.' if where else ''}{key}")
        else:
            if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, (int, float)) and not isinstance(value, (int, float))):
                raise ValueError(f"setting '{where}.{key}' must be like {default!r}, got {value!r}")
            kwargs[key] = type(default)(value) if isinstance(default, float) else value
    return cls(**kwargs)


def load_config(path=None, overrides: dict | None = None) -> Config:
    """Defaults, then the TOML/YAML file at ``path``, then ``overrides`` (a nested dict)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "config file not found")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".toml":
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python 3.10
                    import tomli as tomllib
                values = tomllib.loads(text)
            elif path.suffix.lower() in (".yaml", ".yml"):
                import yaml
                values = yaml.safe_load(text) or {}
            else:
                raise InputError(path, "config must be a .toml, .yaml or .yml file")
        except InputError:
            raise
        except Exception as error:  # the parsers' own exception types differ
            raise InputError(path, f"cannot parse config: {str(error).splitlines()[0]}") from None
    for section, settings in (overrides or {}).items():
        values.setdefault(section, {}).update(settings)
    try:
        return _merge(Config, values, "")
    except (ValueError, TypeError) as error:
        raise InputError(path or "config", str(error)) from None


def config_hash(config: Config) -> str:
    """Short stable hash of a configuration (sha256 of its sorted JSON)."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
