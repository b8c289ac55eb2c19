"""Preprocessing is format-independent and uses one fill colour; drawing never switches backends.

Every file here is written by the test: a JPEG, a lossless PNG of its decoded pixels, and
PNGs stored rotated or mirrored with an EXIF orientation tag saying how to undo it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fashattr.cli import main
from fashattr.config import Config, DataConfig, ModelConfig
from fashattr.data.formats import create_reader
from fashattr.data.prepare import cache_table
from fashattr.data.show import draw_samples
from fashattr.errors import ImageError
from fashattr.models import create_model
from fashattr.portable.images import PAD_COLOR, fill_color, letterbox_geometry, load_presized, open_image
from fashattr.predictor import Predictor
from fashattr.schema import ai6126_schema

VIT_MEAN = (0.5, 0.5, 0.5)  # timm's ViT / EVA recipes: fill 127.5 rounded half up -> 128

# How a camera stores a viewed image for each EXIF orientation (EXIF 2.3): the tag says how to undo it.
STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # stored turned 90° counter-clockwise; viewed by turning it clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def photo(path: Path, width: int = 301, height: int = 201, seed: int = 0) -> Path:
    """A JPEG with texture at every scale (gradients, stripes, noise), so that any difference in
    decoding shows; 301 x 201 is large enough for reduced-scale JPEG decoding at 64 px."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 / width, y * 255 / height, 128 + 100 * np.sin(x / 3.0)], axis=2)
    img += rng.normal(0, 25, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def copies(jpg: Path) -> dict[str, Path]:
    """The JPEG, a lossless PNG of its decoded pixels, and a PNG per EXIF orientation 2-8."""
    pixels = open_image(jpg)
    out = {"jpeg": jpg, "png": jpg.with_suffix(".png")}
    pixels.save(out["png"])
    for tag, stored in STORED.items():
        exif = Image.Exif()
        exif[0x0112] = tag
        out[f"exif{tag}"] = jpg.with_name(f"{jpg.stem}_exif{tag}.png")
        pixels.transpose(stored).save(out[f"exif{tag}"], exif=exif.tobytes())
    return out


@pytest.mark.parametrize("size", [32, 64, 100, 224])
def test_jpeg_lossless_png_and_exif_copies_give_identical_arrays(tmp_path: Path, size: int):
    files = copies(photo(tmp_path / "a.jpg"))
    want = load_presized(files["jpeg"], size)
    assert want.shape == (size, size, 3)
    for name, path in files.items():
        assert np.array_equal(load_presized(path, size), want), name
    # With a box (given in the viewed image's coordinates) too.
    box = (40.0, 20.0, 250.0, 180.0)
    want = load_presized(files["jpeg"], size, box, 0.1)
    for name, path in files.items():
        assert np.array_equal(load_presized(path, size, box, 0.1), want), name


def test_exif_rotated_copy_gets_identical_predictions(tmp_path: Path):
    files = copies(photo(tmp_path / "a.jpg", seed=1))
    torch.manual_seed(0)
    schema = ai6126_schema()
    data = DataConfig(image_size=48, mean=VIT_MEAN, std=VIT_MEAN)
    model = create_model(ModelConfig(backbone="test_resnet"), schema, data.image_size)
    predictor = Predictor(model, schema, data, torch.device("cpu"))
    assert np.array_equal(predictor.load(files["png"])[0, 0], [128, 128, 128])  # 301x201: bars on top
    scores = {name: predictor.scores(predictor.load(files[name])[None]) for name in ("jpeg", "png", "exif6", "exif8")}
    for name in ("png", "exif6", "exif8"):
        for g in schema.names:
            assert np.array_equal(scores[name][g], scores["jpeg"][g]), (name, g)
    results = [predictor.predict_files([files[name]])[0]["groups"] for name in ("jpeg", "exif6")]
    assert results[0] == results[1]
    # Every unreadable file is named, not just the first.
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageError) as e:
        predictor.predict_files([tmp_path / "bad.jpg", files["png"], tmp_path / "gone.png"])
    assert str(e.value).splitlines() == [
        "2 unreadable image(s) of 3:",
        f"{tmp_path / 'bad.jpg'}: not an image Pillow can identify",
        f"{tmp_path / 'gone.png'}: file not found",
    ]


def test_letterbox_is_placed_by_one_integer_rule(tmp_path: Path):
    # (width, height, size) -> (w, h, x, y), by hand: long side -> size, short side
    # size * short / long rounded half up, offset floor(leftover / 2).
    assert letterbox_geometry(201, 301, 64) == (43, 64, 10, 0)  # 42.74 -> 43; leftover 21 -> 10
    assert letterbox_geometry(45, 64, 64) == (45, 64, 9, 0)  # leftover 19 -> 9 (Pillow's pad: round(9.5) = 10)
    assert letterbox_geometry(64, 47, 64) == (64, 47, 0, 8)  # leftover 17 -> 8
    assert letterbox_geometry(96, 64, 64) == (64, 43, 0, 10)  # 42.67 -> 43
    assert letterbox_geometry(200, 100, 63) == (63, 32, 0, 15)  # 31.5 -> 32 (half up)
    assert letterbox_geometry(1000, 1, 64) == (64, 1, 0, 31)  # never zero rows
    Image.new("RGB", (45, 64), (255, 0, 0)).save(tmp_path / "r.png")
    out = load_presized(tmp_path / "r.png", 64)
    red = np.all(out == [255, 0, 0], axis=2)
    assert red[:, 9:54].all() and not red[:, :9].any() and not red[:, 54:].any()
    assert np.all(out[:, :9] == PAD_COLOR) and np.all(out[:, 54:] == PAD_COLOR)


def test_fill_is_the_config_mean_rounded():
    assert fill_color((0.485, 0.456, 0.406)) == PAD_COLOR == (124, 116, 104)  # 123.675, 116.28, 103.53
    assert fill_color(VIT_MEAN) == (128, 128, 128)  # 127.5: half up
    assert fill_color((0.0, 1.0, 0.2)) == (0, 255, 51)


def test_cache_letterbox_uses_the_config_mean_and_is_keyed_by_it(tiny_data: Path, tmp_path: Path):
    table = create_reader("ai6126", tiny_data).read("val")  # 40 x 48 images: 20 x 24 at 24 px, x = 2
    vit = DataConfig(root=str(tiny_data), image_size=24, mean=VIT_MEAN, cache_dir=str(tmp_path), workers=1)
    pixels = cache_table(table, vit, progress=False).pixels
    assert np.all(pixels[:, :, :2] == 128) and np.all(pixels[:, :, 22:] == 128)
    assert not np.all(pixels[:, :, 2:22] == 128)
    imagenet = cache_table(table, DataConfig(image_size=24, cache_dir=str(tmp_path), workers=1), progress=False)
    assert np.all(imagenet.pixels[:, :, :2] == PAD_COLOR)
    assert len(list(tmp_path.glob("*.u8"))) == 2  # the fill is part of the cache key
    assert np.array_equal(pixels[:, :, 2:22], imagenet.pixels[:, :, 2:22])  # only the bars differ


def test_show_draws_at_the_config_size_fill_and_format(tmp_path: Path):
    root = tmp_path / "shop"
    for k, name in enumerate(("dress", "shirt")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (30, 60), (200, 40 * k, 10 * i)).save(root / name / f"{i}.png")
    cfg = Config(data=DataConfig(format="folder", root=str(root), image_size=40, mean=VIT_MEAN))
    samples = draw_samples(cfg, "train", 3, augment=True)
    assert samples.images.shape == (3, 40, 40, 3) and samples.augmented is not None
    assert np.all(samples.images[:, :, :10] == 128)  # 30 x 60 -> 20 x 40 at x = 10
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump({"data": {"format": "folder", "image_size": 40, "mean": list(VIT_MEAN)}})
    )
    # No --format and no --size: the config's format (folder) and image_size, not ai6126 / 128.
    args = ["data", "show", str(root), "--config", str(tmp_path / "c.yaml"), "--n", "2"]
    assert main([*args, "--out", str(tmp_path / "s.png")]) in (0, None)
    with Image.open(tmp_path / "s.png") as grid:
        assert grid.format == "PNG"


@pytest.fixture
def svg_backend():
    """A user's own backend choice, as a notebook makes one; restored afterwards."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield
    matplotlib.use(before)


def test_drawing_never_switches_the_matplotlib_backend(svg_backend: None, tmp_path: Path):
    from fashattr.data.check import plot_distribution
    from fashattr.data.grid import sample_grid
    from fashattr.engine.lr_find import LrFindResult, save_lr_find
    from fashattr.report.compare import RunInfo, plot_curves

    sample_grid(np.zeros((2, 8, 8, 3), np.uint8), ["a", "b"], tmp_path / "grid.png")
    lrs = [1e-4 * 1.5**i for i in range(20)]
    save_lr_find(
        LrFindResult(lrs, [2.0 - i / 20 for i in range(20)], [2.0] * 20, 1e-3, 1e-3, "valley", 1e-3, False), tmp_path
    )
    history = [{"epoch": 1, "avg_class_acc": 0.5, "train_loss": 1.0, "eval_loss": 1.1}]
    run = RunInfo(
        path=tmp_path, name="r", recipe="x", backbone="test_resnet", image_size=32, used_at=32, parameters=1,
        weights_mb=0.1, wall_s=1.0, best_epoch=1, epochs_run=1, select_metric="avg_class_acc", best=history[0],
        history=history,
    )  # fmt: skip
    plot_curves([run], tmp_path / "curves.png")
    report = {"dataset": "d", "splits": {"train": {"labeled": True, "class_counts": {"g": {"a": 3, "b": 1}}}}}
    plot_distribution(report, tmp_path / "dist.png")
    assert matplotlib.get_backend() == "svg"
    for name in ("grid.png", "lr_find.png", "curves.png", "dist.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and np.asarray(img).std() > 0, name
