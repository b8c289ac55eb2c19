"""Bundles: a trained model as a folder that stands alone, versioned and hashed.

``BUNDLE/config.json`` (schema, model arguments, preprocessing, decoding, metrics),
``model.safetensors``, ``README.md`` (model card), optionally ``model.onnx`` / ``model.int8.onnx`` with
``predict_onnx.py`` and ``fashattr_portable/`` (the code it runs), and ``hashes.json``: the sha256 of every
other file and the ``bundle_hash`` over them, the model id every later tool records. Loading never
unpickles anything: JSON, safetensors and ONNX only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fashattr.deploy.card import model_card
from fashattr.errors import BundleError
from fashattr.portable import bundle as bundle_format
from fashattr.portable.bundle import FORMAT, FORMAT_VERSION, Preprocess, compute_hashes, read_bundle_config
from fashattr.portable.tta import tta_views

log = logging.getLogger("fashattr")

CONFIG, WEIGHTS, HASHES, CARD = "config.json", "model.safetensors", "hashes.json", "README.md"
ONNX_FP32, ONNX_INT8 = "model.onnx", "model.int8.onnx"
FORMATS = ("bundle", "onnx", "onnx-int8")


# --- hashes and verification: fashattr.portable.bundle holds the one implementation (it ships in bundles) ---


def write_hashes(bundle: Path) -> str:
    """Hash every file of ``bundle`` into ``hashes.json``; returns the bundle hash (the model id)."""
    hashes = compute_hashes(bundle)
    (bundle / HASHES).write_text(json.dumps(hashes, indent=1) + "\n")
    return str(hashes["bundle_hash"])


def verify_bundle(bundle: str | Path) -> dict[str, Any]:
    """Check a bundle against its ``hashes.json`` and return its config.

    Raises:
        BundleError: naming the file: a newer format version, a listed file missing, a file whose
            sha256 differs from the listed one (expected vs found), or a file no list names.
    """
    bundle_format.verify_bundle(bundle)
    return read_bundle_config(bundle)


def bundle_hash(bundle: str | Path) -> str:
    """The model id of a bundle (verified first): the ``bundle_hash`` of its ``hashes.json``."""
    return bundle_format.verify_bundle(bundle)


# --- writing --------------------------------------------------------------------------------


def bundle_config(run_dir: str | Path, weights: str = "best", calibration: bool = True) -> dict[str, Any]:
    """The ``config.json`` of a run's bundle (without the ``onnx`` part): everything the runtime needs.

    Its ``decoding`` comes from the run's ``calibration.json`` (``fashattr calibrate``) when there is one
    for these weights and ``calibration`` is on; else it is the raw model's.

    Raises:
        CalibrationError: the run's calibration.json is unreadable or was fitted on weights changed since.
    """
    import fashattr
    from fashattr.calibration.store import bundle_decoding, load_calibration
    from fashattr.config import load_config
    from fashattr.schema import Schema

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    schema = Schema.load(run_dir / "schema.yaml")
    model = dataclasses.asdict(dataclasses.replace(cfg.model, pretrained=False, pretrained_file=None))
    summary = _read_json(run_dir / "summary.json")
    d = cfg.data
    pre = preprocess_of(d)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fashattr_version": fashattr.__version__,
        "schema": schema.to_dict(),
        "model": model,
        "preprocess": pre.to_json(),
        "decoding": bundle_decoding(load_calibration(run_dir, weights, pre.image_size) if calibration else None),
        "metrics": {
            "test_holdout": summary.get("test_holdout"),
            "test_holdout_images": summary.get("test_holdout_images"),
            "selection_holdout": summary.get("best"),
            "best_epoch": summary.get("best_epoch"),
            "select_metric": summary.get("select_metric"),
        },
        "source": {
            "run": run_dir.name,
            "weights": weights,
            "trained_on": {
                "format": d.format,
                "root": Path(d.root).name,
                "train_split": d.train_split,
                "image_size": d.image_size,  # the side it trained at; preprocess.image_size is the one it is used at
                **(summary.get("data_counts") or _counts_from_old_log(run_dir / "train.log")),
            },
            "recipe": cfg.recipe,
            "epochs": cfg.train.epochs,
            "epochs_run": summary.get("epochs_run"),
            "loss": dataclasses.asdict(cfg.loss),
            "optim": {"name": cfg.optim.name, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay},
            "parameters": summary.get("parameters"),
            "pretrained_init": bool(cfg.model.pretrained or cfg.model.pretrained_file),
            "backbone_weights": summary.get("backbone_weights"),  # source, package, version, sha256
            "channels_last": cfg.train.channels_last,
        },
    }


def preprocess_of(data: Any) -> Preprocess:
    """The preprocessing a run's ``DataConfig`` is used with, as its bundle records it (at ``data.eval_size`` when
    set: ``data.prepare.inference_data``). A background step (with
    ``data.background=remove``) names the run's model file here; ``write_bundle`` copies that file into the
    bundle and records its name instead."""
    from fashattr.portable.background import background_for
    from fashattr.portable.images import fill_color

    step = background_for(data)
    return Preprocess(
        image_size=data.eval_size or data.image_size,  # a model is used at data.eval_size when it has one
        fill=fill_color(data.mean),
        mean=tuple(data.mean),
        std=tuple(data.std),
        bbox_crop=data.bbox_crop,
        bbox_margin=data.bbox_margin,
        background=None if step is None else step.to_json(),
    )


def _copy_background(config: dict[str, Any], folder: Path) -> None:
    """Make the bundle's background step stand alone: its model file copied in (hashed with the other
    files; its sha256 checked against the one the cache key used). Its code travels in every ONNX bundle's
    ``fashattr_portable/``."""
    from fashattr.portable import background as bg

    step = config["preprocess"].get("background")  # edited in place: the model file's name in the bundle
    if not step:
        return
    if step.get("model"):
        shutil.copyfile(step["model"], folder / bg.BUNDLE_MODEL)
        found = bg.file_sha256(folder / bg.BUNDLE_MODEL)
        if found != step["model_sha256"]:
            raise ValueError(f"{step['model']} changed during export: sha256 {found}, expected {step['model_sha256']}")
        step["model"] = bg.BUNDLE_MODEL


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _counts_from_old_log(train_log: Path) -> dict[str, int]:
    """Image counts of a run trained before summary.json kept them (``data_counts``), from its log line
    ``data: N training images, M for model selection ...``."""
    if not train_log.is_file():
        return {}
    pattern = r"data: (\d+) training images, (\d+) for model selection[^,\n]*(?:, (\d+) in the test)?"
    m = None
    for m in re.finditer(pattern, train_log.read_text()):  # noqa: B007 (the last run's line wins)
        pass
    if m is None:
        return {}
    out = {"train_images": int(m[1]), "selection_images": int(m[2])}
    if m[3]:
        out["test_holdout_images"] = int(m[3])
    return out


def write_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = ("bundle",),
    weights: str = "best",
    calib_images: int = 200,
    opset: int = 18,
    tta: str = "none",
    decode: str | None = None,
) -> Path:
    """Export a run as a bundle folder (written beside ``out_dir``, then moved into place).

    Args:
        run_dir: a run folder written by ``fashattr train``.
        out_dir: the bundle folder; an existing bundle there is replaced, any other folder is refused.
        formats: ``bundle`` (safetensors + config + card), ``onnx`` (adds ``model.onnx`` and
            ``predict_onnx.py``), ``onnx-int8`` (adds ``model.int8.onnx`` as well).
        weights: ``best`` or ``last``.
        calib_images: training images that calibrate the int8 model.
        opset: ONNX opset.
        tta: test-time augmentation every runtime of the bundle applies (``"tta"`` of config.json:
            ``none``, ``flip``, ``zoom``, ``flip+zoom``; ``portable.tta.tta_views``).
        decode: the decoding mode the bundle defaults to (``accuracy``, ``balanced``, ``none``); None: the
            one ``fashattr calibrate`` made the run's default.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: the run has no such weights.
        FileExistsError: ``out_dir`` exists and is not a bundle.
        ValueError: an exported file over the run's ``model.max_mb``.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format {sorted(unknown)}; choose from {FORMATS}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    src = run_dir / f"{weights}.safetensors"
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found; is {run_dir} a fashattr run folder with a finished epoch?")
    if out_dir.exists() and not (out_dir.is_dir() and ((out_dir / HASHES).is_file() or not any(out_dir.iterdir()))):
        raise FileExistsError(f"{out_dir} exists and is not a fashattr bundle; choose another --out")
    config = bundle_config(run_dir, weights)
    tta_views(tta)  # an unknown setting fails before anything is written
    config["tta"] = tta
    if decode is not None:
        from fashattr.calibration.store import with_default

        config["decoding"] = with_default(config["decoding"], decode)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        shutil.copyfile(src, tmp / WEIGHTS)
        model = model_from_config(config, tmp / WEIGHTS)  # the copy loads into the model it describes
        if "onnx" in formats or "onnx-int8" in formats:
            config["onnx"] = _export_onnx(model, config, tmp, run_dir, "onnx-int8" in formats, calib_images, opset)
        _copy_background(config, tmp)
        config["files_mb"] = {p.name: round(p.stat().st_size / 1e6, 3) for p in sorted(tmp.iterdir())}
        _check_budget(config, tmp)
        (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
        (tmp / CARD).write_text(model_card(config))
        digest = write_hashes(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("bundle %s written to %s", digest[:16], out_dir)
    return out_dir


def _check_budget(config: dict[str, Any], folder: Path) -> None:
    """FASHION-HOW's budget (``model.max_mb``) on every exported model file."""
    budget = config["model"].get("max_mb")
    if budget is None:
        return
    for name in (WEIGHTS, ONNX_FP32, ONNX_INT8):
        if (folder / name).is_file() and (mb := (folder / name).stat().st_size / 1e6) > budget:
            raise ValueError(f"{name}: {mb:.2f} MB, over the budget model.max_mb = {budget:g} MB")


def _export_onnx(
    model: Any, config: dict[str, Any], folder: Path, run_dir: Path, int8: bool, calib_images: int, opset: int
) -> dict[str, Any]:
    """model.onnx (+ model.int8.onnx, with the holdout metric before and after) and predict_onnx.py:
    ``deploy.onnx_bundle.export_bundle_onnx``; returns the config's ``onnx`` part."""
    from fashattr.deploy.onnx_bundle import export_bundle_onnx

    return export_bundle_onnx(model, config, folder, run_dir, int8, calib_images, opset)


BACKEND_FORMAT = {"auto": "bundle", "torch": "bundle", "onnx": "onnx", "onnx-int8": "onnx-int8"}


def temporary_bundle(
    run_dir: str | Path, backend: str = "auto", weights: str = "best", prefix: str = "fashattr-"
) -> Path:
    """A run folder exported into a new temporary folder, as the bundle ``backend`` runs (``auto`` and
    ``torch``: safetensors only; ``onnx``, ``onnx-int8``: with that ONNX file), so a run served or tagged
    carries the model id its exported bundle would. The caller removes the bundle's parent folder."""
    fmt = BACKEND_FORMAT[backend]
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    log.info("exporting run %s to a temporary %s bundle in %s", run_dir, fmt, tmp)
    return write_bundle(run_dir, tmp / Path(run_dir).resolve().name, [fmt], weights)


def model_from_config(config: dict[str, Any], weights: Path) -> Any:
    """The AttributeModel a bundle config describes, with ``weights`` loaded (strict), in eval mode."""
    from fashattr.config import ModelConfig
    from fashattr.models import create_model
    from fashattr.models.weights import load_weights
    from fashattr.schema import Schema

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(config["model"]) - fields)
    if unknown:
        raise BundleError(weights.parent / CONFIG, f"model keys this fashattr does not know: {unknown}")
    args: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in config["model"].items()}
    mc = ModelConfig(**args)
    # The budget was checked at training time; a bundle is loaded whatever its size.
    mc = dataclasses.replace(mc, pretrained=False, pretrained_file=None, max_mb=None)
    model = create_model(mc, Schema.from_dict(config["schema"]), Preprocess.of(config).image_size)
    try:
        model.load_state_dict(load_weights(weights))
    except RuntimeError as e:
        raise BundleError(weights, f"does not fit the model in config.json: {str(e).splitlines()[0]}") from None
    return model.eval()


def load_bundle_torch(bundle: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Verify a bundle and build its PyTorch model: ``(AttributeModel in eval mode, config)``."""
    from fashattr.device import resolve_device

    bundle = Path(bundle)
    config = verify_bundle(bundle)
    return model_from_config(config, bundle / WEIGHTS).to(resolve_device(device)), config


# --- the model card -----------------------------------------------------------------------------
