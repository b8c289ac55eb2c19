"""fashattr: train, evaluate and serve multi-attribute fashion classifiers."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it (setuptools dynamic version)
__all__ = [
    "Config",
    "Predictor",
    "Schema",
    "compute_metrics",
    "create_loss",
    "create_model",
    "create_reader",
    "eval_run",
    "fit",
    "load_config",
    "predict_split",
]

# Imported on first use, so `import fashattr` stays cheap (decode workers import it too).
_LOCATIONS = {
    "Config": "fashattr.config",
    "load_config": "fashattr.config",
    "Predictor": "fashattr.predictor",
    "eval_run": "fashattr.predictor",
    "predict_split": "fashattr.predictor",
    "Schema": "fashattr.schema",
    "compute_metrics": "fashattr.metrics",
    "create_loss": "fashattr.losses",
    "create_model": "fashattr.models",
    "create_reader": "fashattr.data.formats",
    "fit": "fashattr.engine.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        import importlib

        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'fashattr' has no attribute {name!r}")
