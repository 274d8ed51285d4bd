"""Command-line options generated from the configuration dataclasses.

Every field of :class:`~adaref.training.config.RunConfig` (and of the model and training
configs inside it) becomes a flag named by its dotted path, ``--model.gate.hidden``,
``--train.batch_size``, whose help line is the comment written next to the field in the
source, so the documentation lives in one place. Values are parsed by the field's type:
numbers, ``true``/``false``, one of a Literal's choices, comma-separated tuples, or JSON
for dicts.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import typing
from typing import Any, Iterator

from adaref.config import Config, ConfigError


def _comments(cls: type) -> dict[str, str]:
    """field name -> the comment on its line in the class source ('' if none)."""
    out: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return out
    last = None
    for line in source.splitlines():
        m = re.match(r"\s+(\w+):\s*[^#]*?(?:#\s*(.*))?$", line)
        if m and not line.strip().startswith(("def ", "#", "\"")):
            last = m.group(1)
            out[last] = (m.group(2) or "").strip()
            continue
        cont = re.match(r"\s+#\s*\^?\s*(.*)$", line)              # "# ^ explanation" continues
        if cont and last:
            out[last] = (out[last] + " " + cont.group(1).strip()).strip()
    return out


def config_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted name, type hint, help) for every leaf field of a Config dataclass."""
    hints = typing.get_type_hints(cls)
    notes = _comments(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Config):
            yield from config_fields(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hint, notes.get(f.name, "")


def parse_value(text: str, hint: Any, name: str) -> Any:
    """Parse a command-line string by the field's type; errors name the option."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if origin is typing.Literal:
            choices = typing.get_args(hint)
            if text not in choices:
                raise ConfigError(f"--{name}: choose one of {', '.join(map(str, choices))}, got {text!r}")
            return text
        if origin is tuple:
            if text.strip() == "":
                return ()
            if text.strip().startswith(("[", "(")):
                return json.loads(text.replace("(", "[").replace(")", "]"))
            args = typing.get_args(hint)
            item = args[0] if args else str
            return tuple(parse_value(t.strip(), item, name) for t in text.split(","))
        if hint is dict or origin is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
        return text
    except ConfigError:
        raise
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(f"--{name}: cannot read {text!r} as {getattr(hint, '__name__', hint)}") from None


def add_config_flags(parser: argparse.ArgumentParser, cls: type, prefix: str) -> dict[str, Any]:
    """Add one flag per leaf field of ``cls`` under ``prefix``; returns name -> type hint."""
    group = parser.add_argument_group(f"{prefix.rstrip('.')} options (defaults: the preset's)")
    hints = {}
    for name, hint, note in config_fields(cls, prefix):
        hints[name] = hint
        metavar = "|".join(map(str, typing.get_args(hint))) if typing.get_origin(hint) is typing.Literal \
            else getattr(hint, "__name__", "VALUE").upper()
        group.add_argument(f"--{name}", dest=f"cfg:{name}", metavar=metavar, default=None,
                           help=note or " ")
    return hints


def set_dotted(tree: dict, name: str, value: Any) -> None:
    keys = name.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def merge(base: dict, update: dict, where: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("options", "overrides",
                                                                                       "expert_options"):
            out[key] = merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out
