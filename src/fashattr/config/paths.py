"""Paths in a config: relative to the config file's folder, made absolute once loaded (recipes shipped in the
package keep their data paths relative to the working folder)."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from fashattr.config.sections import Config
from fashattr.weight_sources import is_package_source

log = logging.getLogger("fashattr.config")

# The keys whose values are file or folder paths (section, key); model.pretrained only when it names a file.
PATH_KEYS = (
    ("data", "root"),
    ("data", "cache_dir"),
    ("data", "pseudo_labels"),
    ("data", "background_model"),
    ("model", "pretrained"),
    ("model", "pretrained_file"),
    ("model", "init_from"),
    ("loss", "distill_from"),
)


def is_recipe(path: Path) -> bool:
    """Whether ``path`` is one of the recipes shipped in the package (configs/recipes links to them)."""
    import importlib.resources

    recipes = Path(str(importlib.resources.files("fashattr") / "recipes")).resolve()
    return path.resolve().parent == recipes


_WARNED: set[tuple[str, str]] = set()  # (config file, path) pairs already warned about in this process


def _absolute(value: str, base: Path, origin: Path | None) -> str:
    """``value`` made absolute against ``base``. A config written before the one path rule (its paths relative to
    the working directory) still loads: a path missing beside the file but present in the working directory is
    taken from there, with a warning."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    resolved = (base / p).resolve()
    if origin is not None and not resolved.exists() and p.exists():
        if (str(origin), value) in _WARNED:  # a command reads a run's config more than once: said once
            return str(p.resolve())
        _WARNED.add((str(origin), value))
        log.warning(
            "%s: %s is not found beside the config but is in the working directory: read from there; paths in a "
            "config are relative to its folder, so write %s",
            origin,
            value,
            os.path.relpath(p.resolve(), base),
        )
        return str(p.resolve())
    return str(resolved)


def resolve_paths(data: dict[str, Any], base: Path, origin: Path | None = None) -> dict[str, Any]:
    """A copy of the config mapping ``data`` whose path values (:data:`PATH_KEYS`, and the csv reader's
    ``image_root``) are absolute, relative ones taken against ``base``. ``origin``: the config file they came
    from (for the warning about paths written before the rule)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (data or {}).items()}
    for section, key in PATH_KEYS:
        block = out.get(section)
        if not isinstance(block, dict) or block.get(key) in (None, "", True, False):
            continue
        value = block[key]
        if section == "model" and key == "pretrained" and (not isinstance(value, str) or is_package_source(value)):
            continue
        if isinstance(value, list):
            block[key] = [_absolute(str(v), base, origin) for v in value]
        elif isinstance(value, str):
            block[key] = _absolute(value, base, origin)
    options = (out.get("data") or {}).get("reader_options")
    if isinstance(options, dict) and isinstance(options.get("image_root"), str):
        out["data"]["reader_options"] = {**options, "image_root": _absolute(options["image_root"], base, origin)}
    return out


def absolute_paths(cfg: Config, base: Path) -> Config:
    """``cfg`` with every relative path (:data:`PATH_KEYS`) made absolute against ``base``: a loaded config holds
    absolute paths, so the run folder's copy of it reads the same from any folder."""

    def fix(v: Any) -> Any:
        return v if v is None or Path(v).is_absolute() else str((base / v).resolve())

    d, m, loss = cfg.data, cfg.model, cfg.loss
    pretrained = m.pretrained
    if isinstance(pretrained, str) and not is_package_source(pretrained):
        pretrained = fix(pretrained)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            d,
            root=fix(d.root),
            cache_dir=fix(d.cache_dir),
            pseudo_labels=fix(d.pseudo_labels),
            background_model=fix(d.background_model),
        ),
        model=dataclasses.replace(
            m, pretrained=pretrained, pretrained_file=fix(m.pretrained_file), init_from=fix(m.init_from)
        ),
        loss=dataclasses.replace(loss, distill_from=[fix(v) for v in loss.distill_from]),
    )
