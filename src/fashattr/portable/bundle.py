"""The bundle format as a bundle's runtime reads it: config.json (format, version, preprocessing, test-time
augmentation, the model's outputs) and hashes.json (the sha256 of every file and the model id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .background import Background
from .errors import BundleError
from .images import load_presized
from .tta import tta_views

FORMAT = "fashattr-bundle"
FORMAT_VERSION = 1  # the newest bundle format this package reads


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_hash(files: dict[str, str]) -> str:
    """The model id: sha256 over ``"NAME  SHA256\\n"`` lines (sha256sum's format) sorted by name."""
    return hashlib.sha256("".join(f"{n}  {s}\n" for n, s in sorted(files.items())).encode()).hexdigest()


def bundle_files(bundle_dir: str | Path) -> list[str]:
    """Every regular file of the bundle but ``hashes.json`` and hidden ones, as sorted POSIX paths."""
    root = Path(bundle_dir)
    names = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and rel.as_posix() != "hashes.json" and not any(part.startswith(".") for part in rel.parts):
            names.append(rel.as_posix())
    return sorted(names)


def compute_hashes(bundle_dir: str | Path) -> dict[str, Any]:
    """The content of ``hashes.json`` for the files now in ``bundle_dir``."""
    files = {n: file_sha256(Path(bundle_dir) / n) for n in bundle_files(bundle_dir)}
    return {"files": files, "bundle_hash": bundle_hash(files)}


def read_bundle_config(bundle_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a bundle, after checking its format and version (not the hashes).

    Raises:
        BundleError: no such folder or config.json, not a fashattr bundle, or a newer format version.
    """
    root = Path(bundle_dir)
    path = root / "config.json"
    if not root.is_dir():
        raise BundleError(root, "no such bundle folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(path, "missing: a bundle folder holds config.json (is this a fashattr bundle?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(path, f"not readable JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise BundleError(path, f"not a fashattr bundle config (format {got!r}, expected {FORMAT!r})")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise BundleError(path, f"format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        why = f"written by a newer fashattr (format version {version}; this fashattr reads {FORMAT_VERSION}); upgrade"
        raise BundleError(path, why)
    return config


def verify_bundle(bundle_dir: str | Path) -> str:
    """Check a bundle against its ``hashes.json``; return its ``bundle_hash`` (the model id).

    Raises:
        BundleError: (naming the file) a newer format version, ``hashes.json`` missing or unreadable,
            a listed file missing, a file whose sha256 differs, a file not listed, or a wrong bundle_hash.
    """
    root = Path(bundle_dir)
    read_bundle_config(root)
    hpath = root / "hashes.json"
    try:
        recorded = json.loads(hpath.read_text(encoding="utf-8"))
        listed: dict[str, str] = recorded["files"]
        expected_id: str = recorded["bundle_hash"]
        if not isinstance(listed, dict) or not isinstance(expected_id, str):
            raise TypeError("files must be an object and bundle_hash a string")
    except FileNotFoundError:
        raise BundleError(hpath, "missing: every bundle lists its files' sha256 in hashes.json") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(hpath, f"not a readable hashes file: {e!r}") from None
    for name, sha in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            raise BundleError(path, "missing (listed in hashes.json)")
        found = file_sha256(path)
        if found != sha:
            raise BundleError(path, f"changed: expected sha256 {sha}, found {found}")
    extra = [n for n in bundle_files(root) if n not in listed]
    if extra:
        raise BundleError(root / extra[0], f"not listed in hashes.json (expected only {', '.join(sorted(listed))})")
    if bundle_hash(listed) != expected_id:
        raise BundleError(hpath, f"bundle_hash {expected_id} does not match its files (expected {bundle_hash(listed)})")
    return expected_id


# The extra output of bundles exported since the catalog work: the pooled features (N, F) float32 the heads
# read (AttributeModel.features), last after the group outputs. Export refuses a group of this name.
FEATURES_OUTPUT = "__features__"


def onnx_output_problem(config: dict[str, Any], names: Sequence[str], sizes: Sequence[Any]) -> str | None:
    """Why an ONNX model's outputs (names and last-axis sizes) do not fit the bundle schema, or None.

    A last output named :data:`FEATURES_OUTPUT` (the pooled features) is allowed beside the groups'."""
    groups = config["schema"]["groups"]
    want = [g["name"] for g in groups]
    if list(names)[-1:] == [FEATURES_OUTPUT] and FEATURES_OUTPUT not in want:
        names, sizes = list(names)[:-1], list(sizes)[:-1]
    if list(names) != want:
        return f"outputs {list(names)} do not match the schema's groups {want} (one logits output per group, in order)"
    for g, size in zip(groups, sizes, strict=True):
        if isinstance(size, int) and size != len(g["classes"]):
            return f"output {g['name']!r} has {size} logits but the schema lists {len(g['classes'])} classes"
    return None


@dataclass(frozen=True)
class Preprocess:
    """A bundle's ``preprocess`` block, typed: how an image file becomes the model's input.

    ``fill``: the letterbox bars' colour (``images.fill_color(mean)``); ``mean``, ``std``: the normalisation,
    which ONNX graphs hold themselves and the torch backend applies; ``background``: the background-removal
    step's JSON (:meth:`.background.Background.to_json`), None for photos taken as they are.
    """

    image_size: int
    fill: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bbox_crop: bool = False
    bbox_margin: float = 0.0
    background: dict[str, Any] | None = None
    resample: str = "bilinear"
    letterbox: str = "fashattr-v1"  # images.letterbox_geometry: long side -> size, centred, fill

    @classmethod
    def of(cls, config: dict[str, Any], file: str | Path = "config.json") -> Preprocess:
        """The block of a bundle's ``config.json`` (``file``: its path, for the error).

        Raises:
            BundleError: a key missing or of the wrong type, naming it.
        """
        pre = config.get("preprocess") or {}
        try:
            r, g, b = (int(v) for v in pre["fill"])
            m0, m1, m2 = (float(v) for v in pre["mean"])
            s0, s1, s2 = (float(v) for v in pre["std"])
            return cls(
                image_size=int(pre["image_size"]),
                fill=(r, g, b),
                mean=(m0, m1, m2),
                std=(s0, s1, s2),
                bbox_crop=bool(pre.get("bbox_crop", False)),
                bbox_margin=float(pre.get("bbox_margin", 0.0)),
                background=pre.get("background") or None,
                resample=str(pre.get("resample", "bilinear")),
                letterbox=str(pre.get("letterbox", "fashattr-v1")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(file, f"preprocess: missing or malformed {e}") from None

    def to_json(self) -> dict[str, Any]:
        """The block as ``config.json`` holds it (``background`` only when there is a step)."""
        out: dict[str, Any] = {
            "image_size": self.image_size,
            "fill": list(self.fill),
            "mean": list(self.mean),
            "std": list(self.std),
            "bbox_crop": self.bbox_crop,
            "bbox_margin": self.bbox_margin,
            "resample": self.resample,
            "letterbox": self.letterbox,
        }
        if self.background is not None:
            out["background"] = self.background
        return out

    def load(self, path: str | Path, background: Background | None = None) -> np.ndarray:
        """One image file as the model takes it: uint8 ``(S, S, 3)``, letterboxed with ``fill``, its background
        removed by ``background`` (:func:`background_step` of the same config) when given."""
        return load_presized(path, self.image_size, fill=self.fill, background=background)


def background_step(config: dict[str, Any], root: str | Path | None = None) -> Background | None:
    """The background-removal step of a bundle's ``preprocess.background`` (None for bundles without one).
    ``root``: where a relative model file is (the bundle folder).

    Raises:
        BundleError: the step names a model file that is not there, or an unknown method.
    """
    spec = Preprocess.of(config).background
    if not spec:
        return None
    try:
        step = Background.from_json(spec, root)
        step.load()  # rembg: its session now, so a missing package or changed file fails before any image
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(Path(root or ".") / "config.json", f"preprocess.background: {e}") from None
    return step


def preprocess(config: dict[str, Any], path: str | Path, background: Background | None = None) -> np.ndarray:
    """One image file as the bundle's model takes it: uint8 ``(S, S, 3)``, letterboxed with its fill, its
    background removed by ``background`` (:func:`background_step` of the same config) when given."""
    return Preprocess.of(config).load(path, background)


def tta_mode(config: dict[str, Any]) -> str:
    """The bundle's test-time augmentation (``"tta"`` of config.json; ``"none"`` for bundles without it)."""
    tta = config.get("tta") or "none"
    tta_views(tta)  # an unknown setting fails when the bundle is loaded
    return str(tta)
