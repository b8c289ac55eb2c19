"""A config from YAML plus ``key=value`` overrides, validated against the dataclasses: an unknown key names the closest
valid key, a value of the wrong type names the key, the value and the type expected."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from fashattr.config.checks import check
from fashattr.config.paths import absolute_paths, is_recipe, resolve_paths
from fashattr.config.sections import Config
from fashattr.errors import ConfigError
from fashattr.weight_sources import preprocessing_of

log = logging.getLogger("fashattr.config")


class _KeyProblem(ConfigError):
    """A ConfigError about one key; ``parts`` is its path, so the YAML line holding it can be named."""

    def __init__(self, message: str, parts: tuple[str, ...], unknown: bool = False) -> None:
        super().__init__(message)
        self.parts = parts
        self.unknown = unknown


def _suggest(key: str, valid: list[str], where: str, origin: str) -> _KeyProblem:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        hint = f"did you mean {where + close[0]!r}?"
    else:
        section = f"keys in {where[:-1]}" if where else "top-level keys"
        hint = f"valid {section}: {', '.join(valid)}."
    parts = (*where.split(".")[:-1], key)
    return _KeyProblem(f"unknown config key {where + key!r}{origin}; {hint}", parts, unknown=True)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (int widens to float, lists become tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is Literal:
        options = typing.get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads `amp: off` as false and `on` as true: the user meant the word
            word = "on" if value else "off"
            if word in options:
                return word
        elif value in options:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: type, data: dict[str, Any], where: str, origin: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; ``where`` is the key prefix ("optim."), ``origin`` says
    where an unknown key came from (" in command-line override 'x=1'")."""
    if not isinstance(data, dict):
        raise _KeyProblem(f"{where[:-1] or 'config'}: expected a mapping, got {data!r}", tuple(where.split(".")[:-1]))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _suggest(str(key), list(fields), where, origin)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{where}{key}.", origin)  # type: ignore[arg-type]
            continue
        try:
            kwargs[key] = _coerce(value, tp, f"{where}{key}")
        except ConfigError as e:
            raise _KeyProblem(str(e), (*where.split(".")[:-1], key)) from None
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested mapping into a Config; the preprocessing it leaves unset follows the weights."""
    cfg: Config = _build(Config, data or {}, "")
    check(cfg)
    cfg = _follow_weights(cfg, (data or {}).get("data") or {})
    _warn_eval_size(cfg.data.image_size, cfg.data.eval_size)
    return cfg


def _warn_eval_size(image_size: int, eval_size: int | None) -> None:
    """An absolute ``data.eval_size`` does not follow an ``image_size`` changed on the command line: say so when
    the two sizes are far apart (the measured gains came from using the model 1.17x and 1.29x larger than it
    trained)."""
    if eval_size is not None and not 0.8 <= eval_size / image_size <= 1.5:
        log.warning(
            "data.eval_size %d is %.2fx data.image_size %d: the model is used at a size far from the one it trains "
            "at; change data.eval_size with data.image_size (null: the same size)",
            eval_size, eval_size / image_size, image_size,
        )  # fmt: skip


def _follow_weights(cfg: Config, data_keys: dict[str, Any]) -> Config:
    """Fill ``data.mean``, ``data.std`` and ``data.image_size`` from the pretrained weights' own config
    where the config does not set them; warn where it sets a normalisation the weights were not trained with."""
    wanted = preprocessing_of(cfg.model.pretrained_file or cfg.model.pretrained, cfg.model.backbone)
    if wanted is None:
        return cfg
    fill = {k: v for k, v in wanted.items() if k not in data_keys}
    for key in ("mean", "std"):
        given = getattr(cfg.data, key)
        if key in data_keys and any(abs(a - b) > 1e-6 for a, b in zip(given, wanted[key], strict=True)):
            log.warning(
                "data.%s=%s differs from the %s the weights %s were trained with (%s): features shift; "
                "leave data.%s unset to follow the weights",
                key, list(given), key, cfg.model.pretrained, list(wanted[key]), key,
            )  # fmt: skip
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **fill)) if fill else cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides; values are parsed as YAML (``lr=1e-3``, ``x=[1,2]``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (data or {}).items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.epochs=5)")
        value = yaml.safe_load(raw) if raw != "" else None
        # YAML 1.1 reads 1e-3 as a string; accept it as the float a user meant.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value) if any(c in value for c in "eE.") else value
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: ``section.key=value`` items, applied in order after the file.

    Returns:
        The validated config.

    Raises:
        ConfigError: naming where the bad key or value came from: the file and its line, or
            the command-line override that gave it.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        text = path.read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        try:
            _build(Config, data, "")  # the file's own keys and values, before any override
        except ConfigError as e:
            line = _yaml_line(text, e.parts) if isinstance(e, _KeyProblem) else None
            raise ConfigError(f"{path}{'' if line is None else f':{line}'}: {e}") from None
        # The one path rule: a relative path in a config file is relative to that file's folder (as a label
        # table's image paths are to the table's). Shipped recipes are templates run from anywhere: theirs are
        # relative to the working directory, like a path typed in an override.
        data = resolve_paths(data, Path.cwd() if is_recipe(path) else path.resolve().parent, path)
    for item in overrides or []:
        data = apply_overrides(data, [item])
        try:
            # The file and the earlier overrides are valid, so whatever fails here is this item's.
            _build(Config, data, "", origin=f" in command-line override {item!r}")
        except ConfigError as e:
            if isinstance(e, _KeyProblem) and e.unknown:
                raise
            raise ConfigError(f"command-line override {item!r}: {e}") from None
    data = resolve_paths(data, Path.cwd())  # the overrides' relative paths: the working directory
    try:
        return absolute_paths(config_from_dict(data), Path.cwd())  # and the defaults'
    except ConfigError as e:  # a cross-field check: the file and the overrides together
        sources = [str(path)] if path is not None else []
        sources += ["the command-line overrides"] if overrides else []
        raise ConfigError(f"{' with '.join(sources) or 'config'}: {e}") from None


def _yaml_line(text: str, parts: tuple[str, ...]) -> int | None:
    """The 1-based line of the deepest key of ``parts`` found in the YAML ``text``."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    line = None
    for part in parts:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if k.value == part), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
