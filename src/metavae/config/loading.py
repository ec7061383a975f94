"""Typed, validated construction of frozen config dataclasses from plain dicts (YAML).

Unknown keys, wrong types and values outside a ``Literal`` give a :class:`ConfigError` that
names the dotted key, what was expected and what was given. Floats must be finite and integers
fit in 32 bits (no configurable size or count is larger), so an absurd value is refused here
rather than overflowing deep inside torch.

YAML is read with the YAML 1.2 core schema for scalars (:func:`parse_yaml`): ``1e-3``, ``1E6``
and ``1.0e-3`` are floats, ``017`` is seventeen, and only ``true``/``false`` are booleans
(YAML 1.1, PyYAML's default, reads ``1e-3`` as a string and ``no``/``on`` as booleans).
Duplicate keys in a mapping are an error, not "last one wins".
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from metavae.errors import ConfigError
from metavae.files import atomic_write_text

__all__ = ["MAX_INT", "parse_yaml", "from_dict", "to_dict", "require", "require_positive", "set_dotted", "parse_overrides", "flatten", "read_config_file", "save_config"]


T = TypeVar("T")

#: the largest integer any config field accepts (sizes, counts, seeds)
MAX_INT = 2**31 - 1

_BOOL, _INT, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


class _Yaml12Loader(yaml.SafeLoader):
    """``SafeLoader`` with the YAML 1.2 core schema's booleans, integers and floats, and no duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"duplicate key {key!r} at line {line} (first given at line {seen[key]}): "
                                  "give each key once")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:  # type: ignore[override]
        text = str(self.construct_scalar(node))
        sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Yaml12Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|[-+]?0o[0-7]+|[-+]?0x[0-9a-fA-F]+)$"),
                                    list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)
_Yaml12Loader.add_constructor(_INT, _Yaml12Loader.construct_yaml_int)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` (YAML 1.2 core scalars, duplicate keys refused); errors name ``source``."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(exc).split())})") from None


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"config key '{key}': {value!r} is not {_describe(tp)}")
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}': expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected {_describe(tp)}, got {value!r}")
        (item,) = get_args(tp)[:1]
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ConfigError(f"config key '{key}': {value} is out of range (at most {MAX_INT} in absolute value)")
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"config key '{key}': {value!r} is not allowed: expected a finite number")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
    else:  # pragma: no cover - a field type this loader does not know is a programming error
        raise TypeError(f"unsupported config field type {tp!r} for {key}")
    raise ConfigError(f"config key '{key}': expected {_describe(tp)}, got {value!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, validating keys and types; defaults fill the rest."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    # fields marked ``metadata={"internal": True}`` are set by code, never by a config file
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}  # type: ignore[arg-type]
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(f"config section '{prefix or '<root>'}': key {name!r} is not a name; "
                              f"valid keys here: {', '.join(sorted(fields))}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise ConfigError(f"unknown config key {where}; valid keys here: {', '.join(sorted(fields))}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section '{prefix or '<root>'}': {exc}") from exc


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists, fit for YAML and ``torch.load(weights_only=True)``."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def require(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("config key 'key': message")`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def require_positive(config: Any, section: str, *names: str) -> None:
    """Every named field of ``config`` is a positive number, or every entry of a tuple field is."""
    for name in names:
        value = getattr(config, name)
        ok = all(v > 0 for v in value) if isinstance(value, tuple) else value > 0
        require(ok, f"{section}.{name}", f"must be positive, got {value}")


# --------------------------------------------------------------------------- files and overrides
def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``key = "a.b"``, creating sections as needed."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"--set {key}: not a dotted key such as train.lr")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    """``["train.epochs=5", …]`` → ``[("train.epochs", 5), …]`` (values parsed as YAML 1.2)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=5")
        key, text = item.split("=", 1)
        out.append((key.strip(), parse_yaml(text, f"--set {item!r}")))
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict → dotted ``(key, value)`` pairs (the form of ``--set`` overrides)."""
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.extend(flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (an empty file is ``{}``); every failure is a :class:`ConfigError`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist (shipped configs are under configs/)")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory: give the path of a YAML file in it")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}): give a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    raw = parse_yaml(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections (data, model, train, …); got {raw!r}")
    return raw


def save_config(config: Any, path: Path) -> None:
    """Write ``config.to_dict()`` (or a plain mapping) as YAML, atomically."""
    tree = config if isinstance(config, Mapping) else config.to_dict()
    atomic_write_text(path, yaml.safe_dump(to_dict(tree), sort_keys=False))
