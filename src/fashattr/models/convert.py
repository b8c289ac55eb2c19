"""Pretrained state dicts into timm backbones: read safely, rename, check every tensor.

A converter maps a foreign state dict onto a timm backbone's own keys. Nothing is dropped
silently: a tensor with no place is an error naming it, except an ImageNet classifier, which
a backbone built with ``num_classes=0`` has no place for by design (named in the log).
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fashattr.models.weights import load_weights

log = logging.getLogger(__name__)

# The reference EfficientNet-Lite implementation (efficientnet-lite-pytorch, itself lukemelas'
# EfficientNet-PyTorch) names its tensors "_conv_stem.weight", "_blocks.0._depthwise_conv.weight", ...
_REFERENCE_CLASSIFIER = ("_fc.weight", "_fc.bias")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or from ``.pth``/``.pt`` with ``weights_only=True`` (nothing
    arbitrary is unpickled). ``{"state_dict": ...}``, ``{"model": ...}`` wrappers are unwrapped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated or corrupt file, or one that holds no state dict (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        return load_weights(path)  # the loader runs and bundles share
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only met something other than tensors and containers
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = found.group(1) if found else "an object that is not a tensor"
        raise ValueError(
            f"{path}: holds pickled Python objects ({what}), which are never loaded (weights_only=True); "
            "save a plain state dict of tensors, or .safetensors"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:  # a cut file fails in the zip reader
        raise ValueError(f"{path}: not a complete PyTorch weights file, truncated or corrupt? ({e})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """``"efficientnet_lite"`` for the reference EfficientNet-Lite naming, else ``"timm"``."""
    return "efficientnet_lite" if "_conv_stem.weight" in state and "_conv_head.weight" in state else "timm"


def _efficientnet_lite(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], where: str) -> dict:
    """The reference EfficientNet-Lite's tensors map one-to-one, in order, onto timm's
    ``tf_efficientnet_lite*`` (stem, blocks with expand -> depthwise -> project, head, classifier);
    each pair is checked by its kind (weight, bias, running statistics) and shape."""
    source = [k for k in state if k not in _REFERENCE_CLASSIFIER]
    target = [k for k in own if k not in ("classifier.weight", "classifier.bias")]
    if len(source) != len(target):
        extra = source[len(target) :] or target[len(source) :]
        raise ValueError(
            f"{where}: {len(source)} tensors for a backbone of {len(target)}: not this architecture "
            f"(first without a partner: {extra[:5]})"
        )
    out = {}
    for s, t in zip(source, target, strict=True):
        if s.rsplit(".", 1)[-1] != t.rsplit(".", 1)[-1] or state[s].shape != own[t].shape:
            raise ValueError(
                f"{where}: tensor {s} {tuple(state[s].shape)} does not fit the backbone's {t} {tuple(own[t].shape)}"
            )
        out[t] = state[s]
    if "classifier.weight" in own:  # a backbone with its ImageNet classifier (the parity test)
        out |= {"classifier.weight": state["_fc.weight"], "classifier.bias": state["_fc.bias"]}
    elif "_fc.weight" in state:
        log.info("%s: the ImageNet classifier (_fc.weight, _fc.bias) is left out: the heads replace it", where)
    return out


def _timm(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], where: str) -> dict:
    """Already timm's names (a timm checkpoint, or a whole AttributeModel's with prefix ``backbone.``)."""
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    unplaced = sorted(k for k in state if k not in own)
    # A classifier trained for other classes has no place in a num_classes=0 backbone, by design.
    head = [k for k in unplaced if k.split(".")[0] in ("fc", "classifier", "head", "last_linear")]
    if len(head) != len(unplaced):
        other = [k for k in unplaced if k not in head]
        raise ValueError(f"{where}: {len(other)} tensors have no place in this backbone, e.g. {other[:5]}")
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise ValueError(f"{where}: weights lack {len(missing)} backbone tensors, e.g. {missing[:5]}")
    bad = [k for k in own if state[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(
            f"{where}: {len(bad)} tensors do not fit, e.g. {k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        )
    if head:
        log.info("%s: left out the classifier tensors %s: the heads replace them", where, head)
    return {k: state[k] for k in own}


CONVERTERS: dict[str, Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], str], dict]] = {
    "efficientnet_lite": _efficientnet_lite,
    "timm": _timm,
}


def load_into(backbone: nn.Module, state: dict[str, torch.Tensor], where: str, layout: str | None = None) -> None:
    """Convert ``state`` (layout detected when None) and load it into ``backbone``, strictly.

    Raises:
        ValueError: a tensor without a place or a shape that does not fit (names them; ``where`` says
            which file or source they came from).
    """
    layout = layout or detect_layout(state)
    own = backbone.state_dict()
    converted = CONVERTERS[layout](state, own, where)
    backbone.load_state_dict(converted, strict=True)
