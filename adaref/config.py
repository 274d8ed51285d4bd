"""Frozen configuration dataclasses that reject unknown keys.

Every component of the model has one config dataclass deriving from :class:`Config`.
``Cls.from_dict(d)`` builds it from plain data (a JSON file, command-line options) and
refuses unknown keys and values of the wrong type, naming the key, instead of ignoring
them the way ``**kwargs`` plumbing does.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class GateConfig(Config):
...     hidden: int = 16      # d, the gate's hidden size (eq. 7)
...     jitter: float = 0.01  # eps of eq. 7
>>> GateConfig.from_dict({"hidden": 8})
GateConfig(hidden=8, jitter=0.01)
>>> GateConfig.from_dict({"hiden": 8})
Traceback (most recent call last):
...
adaref.config.ConfigError: GateConfig: unknown key 'hiden' (known: hidden, jitter)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from typing import Any


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type (or a NaN/infinite float) in a configuration."""


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        if origin is tuple and args:
            return len(args) == len(value) and all(_type_ok(v, h) for v, h in zip(value, args))
        return all(_type_ok(v, args[0]) for v in value) if args else True
    if hint is type(None):
        return value is None
    if hint is float:       # NaN and infinities are never a setting
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: subclasses are ``@dataclass(frozen=True)`` with typed, commented fields."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """Build from plain data; every unknown key anywhere in the tree is reported at
        once, by its dotted path (``model.gate.jiter``), with the keys its class knows."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        unknown = _unknown_keys(cls, data, "")
        if unknown:
            raise ConfigError("; ".join(f"{owner}: unknown key {path!r} (known: {', '.join(known)})"
                                        for path, owner, known in unknown))
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            hint = hints[key]
            if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
                try:
                    value = hint.from_dict(value)
                except ConfigError as e:           # say where: model.controller.gate: GateConfig: ...
                    path = [key] + getattr(e, "path", [])
                    error = ConfigError(f"{'.'.join(path)}: {getattr(e, 'bare', str(e))}")
                    error.path, error.bare = path, getattr(e, "bare", str(e))
                    raise error from None
            if typing.get_origin(hint) is tuple and isinstance(value, list):
                value = _tuplify(value)          # JSON has lists where the config has tuples
            if not _type_ok(value, hint):
                finite = " (finite)" if _has_nonfinite(value) else ""
                raise ConfigError(f"{cls.__name__}: key {key!r} expects {_show(hint)}{finite}, got {value!r}")
            values[key] = float(value) if hint is float else value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed, checked like :meth:`from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})


def _unknown_keys(cls: type, data: dict, prefix: str) -> list[tuple[str, str, list[str]]]:
    """(dotted path, class name, known keys) of every key of ``data`` that ``cls`` (or a
    nested Config field) does not have."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = []
    for key, value in data.items():
        if key not in names:
            out.append((prefix + key, cls.__name__, names))
            continue
        hint = hints[key]
        if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
            out.extend(_unknown_keys(hint, value, f"{prefix}{key}."))
    return out


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_nonfinite(v) for v in value)
    return isinstance(value, float) and not math.isfinite(value)


def _tuplify(value: Any) -> Any:
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value


def _show(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


#: Deepest nesting accepted in a configuration file (a run configuration is 4 levels
#: deep; optimiser options and data overrides add one or two).
MAX_CONFIG_DEPTH = 16
#: Largest configuration file accepted, in bytes.
MAX_CONFIG_BYTES = 1 << 20


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            level += 1
            deepest = max(deepest, level)
            if level > MAX_CONFIG_DEPTH:
                return level
            stack.extend((v, level) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_config_file(path: str, what: str) -> Any:
    """The JSON document in the configuration file ``path``, or :class:`ConfigError`
    naming ``what`` (e.g. ``--config run.json``) and the problem: not a regular file,
    larger than :data:`MAX_CONFIG_BYTES`, not UTF-8 (with the byte offset), not JSON,
    or nested deeper than :data:`MAX_CONFIG_DEPTH`.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "c.json")
    >>> _ = open(p, "wb").write(b'{"seed": 1, "x": "\\xff"}')
    >>> read_config_file(p, "--config c.json")
    Traceback (most recent call last):
    ...
    adaref.config.ConfigError: --config c.json: not UTF-8 text (byte 0xff at offset 18)
    """
    from adaref.io import not_a_regular_file

    problem = not_a_regular_file(path)
    if problem:
        raise ConfigError(f"{what}: {problem}")
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{what}: {size:,} bytes; a configuration file has at most "
                              f"{MAX_CONFIG_BYTES:,}")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{what}: cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{what}: nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    if _depth(value) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"{what}: nested deeper than {MAX_CONFIG_DEPTH} levels")
    return value
