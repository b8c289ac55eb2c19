"""Typed configuration: YAML + ``key=value`` overrides, validated against frozen dataclasses.

- :mod:`.sections`: the dataclasses (every key, type, default and meaning);
- :mod:`.load`: reading YAML and overrides, type coercion, close-match errors, saving;
- :mod:`.paths`: config-relative paths made absolute;
- :mod:`.checks`: cross-field checks.
"""

from fashattr.config.load import apply_overrides, config_from_dict, config_to_dict, load_config, save_config
from fashattr.config.sections import (
    AugmentConfig,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    TrainConfig,
)
from fashattr.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SchedConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]
