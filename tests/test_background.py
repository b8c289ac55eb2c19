"""Background removal (portable/background.py): rembg with a local model the test builds, GrabCut on generated
garments with a known foreground, the cache key, and the same pixels in training and in every runtime.

The U²-Net stand-in is a real ONNX file with U²-Net's signature (one ``(1, 3, 320, 320)`` float32 image in,
one ``(1, 1, 320, 320)`` mask out) that predicts a known mask: the left half of the picture is garment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset, untrained_run
from PIL import Image, ImageDraw

from fashattr.config import ConfigError, load_config
from fashattr.data.cache import fingerprint
from fashattr.data.formats import create_reader
from fashattr.data.prepare import cache_table
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.isolated import onnx_only_venv, run_standalone
from fashattr.deploy.runtime import Runtime
from fashattr.errors import BundleError
from fashattr.portable.background import Background, composite, grabcut_mask, grabcut_rect, model_sha256
from fashattr.portable.images import load_presized

FILL = (10, 200, 30)
IOU_BAR, IOU_MEAN_BAR = 0.93, 0.96  # measured: 0.951 worst, 0.974 mean over the 8 garments (both rectangles)


class HalfMask(torch.nn.Module):
    """U²-Net's signature, a known answer: 1 on the left half of the 320 x 320 mask, 0 on the right."""

    def __init__(self, split: int = 160) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, 320, 320)
        mask[..., :split] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask + 0.0 * x.mean()  # reads the image, so the graph has U²-Net's input


def tiny_u2net(path: Path, split: int = 160) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            HalfMask(split), (torch.zeros(1, 3, 320, 320),), str(path), input_names=["input.1"], dynamo=False
        )
    return path


@pytest.fixture(scope="module")
def u2net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_u2net(tmp_path_factory.mktemp("u2net") / "u2net.onnx")


def texture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------- rembg
def test_rembg_cutout_by_hand(u2net: Path):
    pytest.importorskip("rembg")
    step = Background("rembg", FILL, model=str(u2net), model_sha256=model_sha256(u2net))
    img = texture(64, 48)
    out = np.asarray(step.apply(img))
    # The mask is resized 320 -> 64 wide with LANCZOS: exact away from its edge at column 32.
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :28], np.asarray(img)[:, :28])  # garment: the photo's own pixels
    assert np.all(out[:, 36:] == FILL)  # background: the fill
    # In load_presized: removal on the photo, then the letterbox (64 x 48 -> 32 x 24 at y = 4, bars in FILL).
    img.save(Path(u2net).parent / "p.png")
    x = load_presized(Path(u2net).parent / "p.png", 32, fill=FILL, background=step)
    assert np.all(x[:4] == FILL) and np.all(x[28:] == FILL) and np.all(x[4:28, 19:] == FILL)
    assert np.array_equal(x, load_presized(Path(u2net).parent / "p.png", 32, fill=FILL, background=step))


def test_rembg_imports_and_runs_without_network_and_writes_nothing(u2net: Path, tmp_path: Path):
    """rembg is imported and run in a process whose sockets all fail, with an empty HOME: it neither
    connects anywhere nor creates its model folders (~/.u2net, ~/.rembg) nor downloads a model."""
    pytest.importorskip("rembg")
    home = tmp_path / "home"
    home.mkdir()
    code = f"""
import socket
def refuse(*a, **k):
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import rembg
from fashattr.portable.background import Background, model_sha256
from PIL import Image
step = Background("rembg", (1, 2, 3), model={str(u2net)!r}, model_sha256=model_sha256({str(u2net)!r}))
step.load()
print(step.apply(Image.new("RGB", (40, 30), (200, 0, 0))).getpixel((39, 0)))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("U2NET_HOME", "REMBG_HOME", "XDG_DATA_HOME")}
    env["HOME"] = str(home)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "(1, 2, 3)"
    # Nothing of rembg's (~/.u2net, ~/.rembg): only onnxruntime's own device id (~/.cache/Microsoft/...).
    made = sorted(str(f.relative_to(home)) for f in home.rglob("*") if f.is_file())
    assert all(f.startswith(".cache/Microsoft/") for f in made), made


def test_missing_or_changed_model_file_is_a_clear_error(u2net: Path, tmp_path: Path):
    base = ["data.background=remove", "data.background_method=rembg"]
    with pytest.raises(ConfigError, match=r"rembg needs data\.background_model: put a U²-Net ONNX file") as e:
        load_config(None, base)
    assert "never downloads" in str(e.value)
    gone = tmp_path / "models" / "u2net.onnx"
    with pytest.raises(ConfigError) as e:
        load_config(None, [*base, f"data.background_model={gone}"])
    assert f"data.background_model: {gone} not found: put a U²-Net ONNX file" in str(e.value)
    assert "fashattr never downloads a model" in str(e.value)
    with pytest.raises(ConfigError, match=r"data\.background_model is for data\.background_method=rembg"):
        load_config(None, ["data.background=remove", f"data.background_model={u2net}"])
    with pytest.raises(ConfigError, match=r"data.background_fill: \[0, 256, 0\] must be RGB values"):
        load_config(None, ["data.background_fill=[0,256,0]"])
    # A bundle's step without its file, and a file changed since its sha256 was taken.
    spec = {"method": "rembg", "fill": [1, 2, 3], "model": "background.onnx", "model_sha256": "0" * 64}
    with pytest.raises(ValueError, match=f"background model {tmp_path / 'background.onnx'} not found"):
        Background.from_json(spec, tmp_path)
    pytest.importorskip("rembg")
    copy = Path(shutil.copyfile(u2net, tmp_path / "background.onnx"))
    with pytest.raises(ValueError, match=f"background model {copy} changed: expected sha256 0000"):
        Background.from_json(spec, tmp_path).load()


# ---------------------------------------------------------------------------------------------- GrabCut
def garment_photo(seed: int, width: int = 160, height: int = 200) -> tuple[Image.Image, np.ndarray]:
    """A striped, noisy background and a T-shirt (body, sleeves, neckline) in another colour with its own
    stripes: the photo and the true garment mask."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(90, 200, 3)
    bg = base + 25 * np.sin((x + y) / rng.uniform(3, 6))[..., None] + rng.normal(0, 12, (height, width, 3))
    shape = Image.new("L", (width, height), 0)
    d = ImageDraw.Draw(shape)
    cx, top = width / 2 + rng.uniform(-8, 8), height * rng.uniform(0.18, 0.26)
    bw, bh, sl = width * rng.uniform(0.32, 0.40), height * rng.uniform(0.50, 0.58), width * 0.16
    d.rectangle([cx - bw / 2, top, cx + bw / 2, top + bh], fill=255)
    for s in (-1, 1):
        edge = cx + s * bw / 2
        sleeve = [(edge, top), (edge + s * sl, top + bh * 0.35), (edge + s * sl * 0.6, top + bh * 0.45)]
        d.polygon([*sleeve, (edge, top + bh * 0.25)], fill=255)
    d.ellipse([cx - bw * 0.18, top - bh * 0.06, cx + bw * 0.18, top + bh * 0.08], fill=0)
    truth = np.asarray(shape) > 127
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - base).sum() < 150:  # a garment that differs from its background
        colour = rng.uniform(0, 255, 3)
    fg = colour + 10 * np.sign(np.sin(x / 4.0))[..., None] + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(np.where(truth[..., None], fg, bg), 0, 255).astype(np.uint8)), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_grabcut_finds_generated_garments():
    pytest.importorskip("cv2")
    centred, boxed = [], []
    for seed in range(8):
        img, truth = garment_photo(seed)
        centred.append(iou(grabcut_mask(img) >= 128, truth))  # the centred rectangle, 5% in
        ys, xs = np.nonzero(truth)
        box = (xs.min() - 2.0, ys.min() - 2.0, xs.max() + 3.0, ys.max() + 3.0)
        boxed.append(iou(grabcut_mask(img, box) >= 128, truth))  # from the garment's box
    assert min(centred) >= IOU_BAR and np.mean(centred) >= IOU_MEAN_BAR, centred
    assert min(boxed) >= IOU_BAR and np.mean(boxed) >= IOU_MEAN_BAR, boxed


def test_grabcut_is_deterministic_across_threads():
    pytest.importorskip("cv2")
    photos = [garment_photo(seed)[0] for seed in range(4)]
    first = [grabcut_mask(p) for p in photos]
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(grabcut_mask, photos * 2))
    for k, mask in enumerate(again):
        assert np.array_equal(mask, first[k % 4]), k


def test_grabcut_rectangle_and_composite_by_hand():
    assert grabcut_rect(100, 80, None, 0.05, 1.0) == (5, 4, 90, 72)  # 5% in from every side
    assert grabcut_rect(100, 80, (10, 20, 60, 70), 0.05, 0.5) == (5, 10, 25, 25)  # a box, at half size
    assert grabcut_rect(100, 80, (0, 0, 100, 80), 0.0, 1.0) == (1, 1, 98, 78)  # one pixel of border kept
    img = Image.fromarray(np.array([[[100, 50, 0], [100, 50, 0], [100, 50, 0]]], np.uint8))
    out = np.asarray(composite(img, np.array([[255, 0, 128]], np.uint8), (200, 0, 255)))
    # 128/255 of the photo + 127/255 of the fill, rounded half up: (100*128 + 200*127 + 127) // 255 = 150.
    assert out.tolist() == [[[100, 50, 0], [200, 0, 255], [150, 25, 127]]]
    with pytest.raises(ValueError, match="a 2x40 image is too small for GrabCut"):
        grabcut_mask(Image.new("RGB", (2, 40)))


# ---------------------------------------------------------------------------------------------- cache
def test_cache_key_covers_method_options_and_model_hash(tiny_data: Path, u2net: Path, tmp_path: Path):
    table = create_reader("ai6126", tiny_data).read("val")
    keys = {"keep": fingerprint(table, 32, False, 0.0, FILL)}
    keys["grabcut"] = fingerprint(table, 32, False, 0.0, FILL, Background("grabcut", FILL))
    keys["iterations"] = fingerprint(table, 32, False, 0.0, FILL, Background("grabcut", FILL, iterations=5))
    keys["margin"] = fingerprint(table, 32, False, 0.0, FILL, Background("grabcut", FILL, margin=0.1))
    keys["work_size"] = fingerprint(table, 32, False, 0.0, FILL, Background("grabcut", FILL, work_size=64))
    keys["fill"] = fingerprint(table, 32, False, 0.0, FILL, Background("grabcut", (0, 0, 0)))
    model = Path(shutil.copyfile(u2net, tmp_path / "m.onnx"))
    keys["rembg"] = fingerprint(table, 32, False, 0.0, FILL, Background("rembg", FILL, str(model), model_sha256(model)))
    tiny_u2net(model, split=100)  # the same path, another model
    keys["rembg2"] = fingerprint(
        table, 32, False, 0.0, FILL, Background("rembg", FILL, str(model), model_sha256(model))
    )
    assert len(set(keys.values())) == len(keys), keys
    # The model's path is not part of the key: a copy elsewhere with the same bytes shares the cache.
    other = Path(shutil.copyfile(model, tmp_path / "copy.onnx"))
    step = Background("rembg", FILL, str(other), model_sha256(other))
    assert fingerprint(table, 32, False, 0.0, FILL, step) == keys["rembg2"]


def test_cache_removes_backgrounds_after_the_box_crop(tmp_path: Path):
    """Boxes and removal together: the cache crops to the box (+ margin), GrabCut starts from the box inside
    that crop, then the letterbox; keep and remove are two caches."""
    pytest.importorskip("cv2")
    data = make_dataset(tmp_path / "boxed", {"train": 6, "val": 0, "test": 0}, bbox=True)
    table = create_reader("ai6126", data).read("train")
    assert table.bboxes is not None
    over = [f"data.root={data}", "data.image_size=32", "data.bbox_crop=true", f"data.cache_dir={tmp_path / 'c'}"]
    keep = cache_table(table, load_config(None, over).data, progress=False).pixels
    cfg = load_config(None, [*over, "data.background=remove", "data.background_fill=[10,200,30]"]).data
    removed = cache_table(table, cfg, progress=False).pixels
    assert len(list((tmp_path / "c").glob("*.u8"))) == 2
    step = Background("grabcut", FILL)
    for i in range(len(table)):
        box = tuple(float(v) for v in table.bboxes[i])
        want = load_presized(table.file(i), 32, box, cfg.bbox_margin, (124, 116, 104), step)  # type: ignore[arg-type]
        assert np.array_equal(removed[i], want), i
    assert not np.array_equal(keep, removed)


# ---------------------------------------------------------------------------------------------- one set of pixels
@pytest.mark.realdata
@pytest.mark.parametrize("method", ["grabcut", "rembg"])
def test_training_pixels_equal_every_runtimes_pixels(real_data: Path, u2net: Path, tmp_path: Path, method: str):
    """The same real photos with removal on: the training cache's bytes == the runtime's from the run, from the
    bundle (torch and ONNX backends), the standalone ONNX runner's and catalog tagging's."""
    pytest.importorskip("cv2" if method == "grabcut" else "rembg")
    from fashattr.catalog.work import Work, decode_work
    from fashattr.data.table import Table
    from fashattr.portable import bundle as bundle_format
    from fashattr.portable import onnx_runner
    from fashattr.predictor import Predictor

    extra = [f"data.background_method={method}"] + ([f"data.background_model={u2net}"] if method == "rembg" else [])
    run = untrained_run(real_data, tmp_path, ["data.background=remove", *extra], size=48)
    cfg = load_config(run / "config.yaml")
    full = create_reader("ai6126", str(real_data), {}).read("train")
    rows = [0, 1, 777, 2500, 4999]  # portrait and landscape photos
    table = Table(full.root, [full.paths[r] for r in rows], split="train")
    cache = cache_table(table, cfg.data, progress=False).pixels  # what training and `fashattr eval` see
    files = [table.file(i) for i in range(len(table))]
    assert not np.array_equal(cache[0], load_presized(files[0], 48, fill=(124, 116, 104)))  # removal did something

    bundle = write_bundle(run, tmp_path / "bundle", formats=("onnx",))
    config = json.loads((bundle / "config.json").read_text())
    step = config["preprocess"]["background"]
    assert step["method"] == method
    assert f"background removed ({method}) and painted (124, 116, 104)" in (bundle / "README.md").read_text()
    if method == "rembg":  # the model travels with the bundle, hashed like its other files
        assert step["model"] == "background.onnx" and step["model_sha256"] == model_sha256(u2net)
        assert json.loads((bundle / "hashes.json").read_text())["files"]["background.onnx"] == model_sha256(u2net)
    runtimes = {
        "run": Runtime.from_run(run),
        "bundle-torch": Runtime.from_bundle(bundle),
        "bundle-onnx": Runtime.from_bundle(bundle, backend="onnx"),
    }
    for name, rt in runtimes.items():
        assert np.array_equal(np.stack([rt.preprocess(f) for f in files]), cache), name
    runner = onnx_runner.OnnxRunner(bundle)
    assert np.array_equal(
        np.stack([bundle_format.preprocess(runner.config, f, runner.background) for f in files]), cache
    )
    rt = runtimes["bundle-torch"]
    tagged = [decode_work(Work("x", str(f), 0), rt.image_size, rt.fill, rt.background) for f in files]
    assert np.array_equal(np.stack(tagged), cache)  # type: ignore[arg-type]
    assert np.array_equal(np.stack([Predictor.from_run(run).load(f) for f in files]), cache)
    # And the bundle needs its model file: removed, verification names it.
    if method == "rembg":
        (bundle / "background.onnx").unlink()
        with pytest.raises(BundleError, match=r"background\.onnx: missing"):
            Runtime.from_bundle(bundle)


def test_standalone_predict_onnx_removes_backgrounds_without_fashattr(tiny_data: Path, tmp_path: Path):
    """An ONNX bundle of a GrabCut run: predict_onnx.py, in a venv with only onnxruntime, NumPy, Pillow and
    OpenCV, imports the bundle's copy of the background code and predicts what the torch runtime does."""
    pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    run = untrained_run(tiny_data, tmp_path, ["data.background=remove"], size=32)
    bundle = write_bundle(run, tmp_path / "bundle", formats=("onnx",))
    assert (bundle / "fashattr_portable" / "background.py").is_file() and not (bundle / "background.onnx").exists()
    python = onnx_only_venv(tmp_path / "venv")
    import cv2

    site = Path(cv2.__file__).parent.parent
    target = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    for name in ("cv2", "opencv_python_headless.libs"):
        if (site / name).exists():
            (target / name).symlink_to(site / name)
    photos = sorted((tiny_data / "img").glob("*.jpg"))[:6]
    out = tmp_path / "preds.jsonl"
    proc = run_standalone(python, bundle, *map(str, photos), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = list(Runtime.from_bundle(bundle).predict_files(photos))
    assert len(got) == len(want) == 6
    for a, b in zip(got, want, strict=True):
        assert {g: v["class"] for g, v in a["groups"].items()} == {g: v["class"] for g, v in b["groups"].items()}


def test_runs_that_keep_backgrounds_export_as_before(tiny_data: Path, tmp_path: Path):
    run = untrained_run(tiny_data, tmp_path, [], size=32)
    bundle = write_bundle(run, tmp_path / "bundle")
    config = json.loads((bundle / "config.json").read_text())
    assert "background" not in config["preprocess"]
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "config.json", "hashes.json", "model.safetensors"]
    assert Runtime.from_bundle(bundle).background is None


def test_data_show_draws_before_and_after(tmp_path: Path):
    pytest.importorskip("cv2")
    from fashattr.cli import main
    from fashattr.config import Config, DataConfig
    from fashattr.data.show import draw_samples

    root = tmp_path / "shop"
    for seed, name in enumerate(("shirt", "tee", "top")):
        (root / name).mkdir(parents=True)
        garment_photo(seed)[0].save(root / name / f"{seed}.png")
    data = DataConfig(format="folder", root=str(root), image_size=40, background="remove", background_fill=FILL)
    samples = draw_samples(Config(data=data), "train", 3, augment=True)
    assert samples.before is not None and samples.augmented is not None
    assert samples.before.shape == samples.images.shape == (3, 40, 40, 3)
    painted = np.all(samples.images == FILL, axis=3)
    assert painted[:, 2:6, 6:10].all() and not painted[:, 18:22, 18:22].any()  # corners removed, the shirt kept
    assert not np.any(np.all(samples.before == FILL, axis=3))
    (tmp_path / "c.yaml").write_text(
        f"data:\n  format: folder\n  image_size: 40\n  background: remove\n  background_fill: {list(FILL)}\n"
    )
    out = tmp_path / "s.png"
    assert main(["data", "show", str(root), "--config", str(tmp_path / "c.yaml"), "--n", "3", "--out", str(out)]) in (
        0,
        None,
    )
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.height > grid.width / 3 * 1.5  # two rows of three: before, after
