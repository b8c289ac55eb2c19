"""Schema and typed config."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashattr.config import ConfigError, config_to_dict, load_config, save_config
from fashattr.errors import DatasetError
from fashattr.schema import Group, Schema, ai6126_schema, read_attr_cloth


def test_ai6126_schema_is_26_classes_in_file_order():
    s = ai6126_schema()
    assert s.names == ["pattern", "sleeve", "length", "neckline", "fabric", "fit"]
    assert [g.num_classes for g in s.groups] == [7, 3, 3, 4, 6, 3]
    assert s.num_classes == 26
    assert s["neckline"].classes[2] == "square_neckline"


def test_schema_yaml_round_trip(tmp_path: Path):
    s = Schema((Group("color", ("red", "blue")), Group("style", ("a", "b", "c"), kind="multi")))
    s.save(tmp_path / "schema.yaml")
    assert Schema.load(tmp_path / "schema.yaml") == s


def test_schema_rejects_bad_groups():
    with pytest.raises(ValueError, match="repeats a class"):
        Group("g", ("a", "a"))
    with pytest.raises(ValueError, match="unknown kind"):
        Group("g", ("a", "b"), kind="many")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeats a group"):
        Schema((Group("g", ("a", "b")), Group("g", ("c", "d"))))


def test_read_attr_cloth_matches_builtin(tmp_path: Path):
    lines = ["26 ", "attribute_name   attribute_type"]
    for gi, g in enumerate(ai6126_schema().groups, start=1):
        lines += [f"{c}   {gi}" for c in g.classes]
    (tmp_path / "list_attr_cloth.txt").write_text("\n".join(lines) + "\n")
    assert read_attr_cloth(tmp_path / "list_attr_cloth.txt") == ai6126_schema()


def test_read_attr_cloth_errors_name_line(tmp_path: Path):
    f = tmp_path / "list_attr_cloth.txt"
    f.write_text("3\nheader\na 1\nb 1\nc x\n")
    with pytest.raises(DatasetError, match=r"list_attr_cloth.txt:5: expected 'name group', got 'c x'"):
        read_attr_cloth(f)
    f.write_text("4\nheader\na 1\nb 1\n")
    with pytest.raises(DatasetError, match="count line says 4 classes but 2 follow"):
        read_attr_cloth(f)


def test_config_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "optim.lr=1e-3", "loss.group_weights=[0.95,0.85,0.85,0.9,1,0.9]"])
    assert cfg.train.epochs == 3
    assert cfg.optim.lr == 0.001
    assert cfg.loss.group_weights == [0.95, 0.85, 0.85, 0.9, 1.0, 0.9]
    assert cfg.augment.scale == (1.0, 1.0)


OPTIM_KEYS = "name, lr, weight_decay, momentum, nesterov, betas, layer_decay, stage_lr"
TOP_KEYS = (
    "data, model, loss, optim, sched, augment, train, out_dir, tracking, tracking_uri, tracking_experiment, name, "
    "recipe"
)


def config_error(path: Path | None, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    return str(e.value)


def test_unknown_key_from_the_command_line_says_so():
    assert config_error(None, ["train.epoch=3"]) == (
        "unknown config key 'train.epoch' in command-line override 'train.epoch=3'; did you mean 'train.epochs'?"
    )
    # No close match: the valid keys of that section, and a full stop.
    assert config_error(None, ["optim.zzz=1"]) == (
        f"unknown config key 'optim.zzz' in command-line override 'optim.zzz=1'; valid keys in optim: {OPTIM_KEYS}."
    )
    assert config_error(None, ["epochs=3"]) == (
        f"unknown config key 'epochs' in command-line override 'epochs=3'; valid top-level keys: {TOP_KEYS}."
    )


def test_unknown_key_from_yaml_names_the_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 2\noptim:\n  lr: 0.1\n  learning_rate: 0.1\n")
    assert config_error(bad) == f"{bad}:5: unknown config key 'optim.learning_rate'; valid keys in optim: {OPTIM_KEYS}."
    bad.write_text("# a recipe\nmodel:\n  backbone: resnet18\ntrain:\n  epoch: 2\n")
    assert config_error(bad) == f"{bad}:5: unknown config key 'train.epoch'; did you mean 'train.epochs'?"
    bad.write_text("train:\n  epochs: 2.5\n")
    assert config_error(bad) == f"{bad}:2: train.epochs: expected int, got 2.5"


def test_errors_blame_the_override_not_the_file(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  epochs: 2\n")
    assert config_error(good, ["train.epoch=3"]) == (
        "unknown config key 'train.epoch' in command-line override 'train.epoch=3'; did you mean 'train.epochs'?"
    )
    assert config_error(good, ["optim.lr=1e-3", "optim.lr=abc"]) == (
        "command-line override 'optim.lr=abc': optim.lr: expected float, got 'abc'"
    )
    # A cross-field check sees the file and the overrides together, and says so.
    assert config_error(good, ["train.batch_size=0"]) == (
        f"{good} with the command-line overrides: train.epochs and train.batch_size must be at least 1"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=abc", "optim.lr: expected float, got 'abc'"),
        ("loss.name=hinge", r"loss.name: 'hinge' is not one of \['ce', 'focal', 'bce'\]"),
        ("train.epochs=2.5", "train.epochs: expected int, got 2.5"),
        ("augment.scale=[0.9]", "augment.scale: expected a list of 2 values"),
        ("train.epochs=0", "at least 1"),
        ("oops", "not key=value"),
    ],
)
def test_bad_values_are_named(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_saved_config_reloads_equal(tmp_path: Path):
    cfg = load_config(None, ["model.backbone=resnet10t", "augment.scale=[0.8,1.2]", "data.eval_split=val"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert config_to_dict(again)["augment"]["scale"] == [0.8, 1.2]


def test_yaml_off_is_the_word_off(tmp_path: Path):
    # YAML 1.1 reads a bare `off` as false: `amp: off` in a file or `train.amp=off` on the command line must still
    # mean the option "off", not fail with "False is not one of [...]".
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\n")
    assert load_config(path).train.amp == "off"
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    with pytest.raises(ConfigError, match=r"train.amp: True is not one of"):
        load_config(None, ["train.amp=on"])  # no "on" option: the error names what was read
