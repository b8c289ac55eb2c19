"""Procedural garment images in the FashionDataset layout, for tests and ``fashattr demo``.

Every ai6126 attribute is drawn so that it can be seen: the silhouette carries fit (torso
width), length (top only, mini or maxi dress) and sleeves (none, short, long); a cut-out or
collar carries the neckline (crew, V, square, high collar = no neckline); the fill carries the
fabric (denim twill, translucent chiffon, plain cotton, glossy leather, furry faux, knit
stitches) and the pattern on it (floral, graphic, stripes, embroidery, pleats, solid, lattice).
Backgrounds, position, size and lighting vary. Class frequencies follow the real train split.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fashattr.schema import AI6126_GROUPS

# Train-split class counts of the real FashionDataset (fashattr data check), as frequencies.
TRAIN_COUNTS = {
    "pattern": [768, 853, 334, 422, 109, 2408, 106],
    "sleeve": [1523, 862, 2615],
    "length": [488, 951, 3561],
    "neckline": [2086, 826, 19, 2069],
    "fabric": [310, 702, 3399, 105, 48, 436],
    "fit": [749, 279, 3972],
}
CANVAS = 128  # drawn at this size, then resized (antialiased) to the requested one


def sample_labels(n: int, rng: np.random.Generator, balance: float = 0.5) -> np.ndarray:
    """``(n, 6)`` class indices drawn like the real train split, flattened by ``balance``
    (0 = real frequencies, 1 = uniform) so that rare classes still appear in a small set."""
    cols = []
    for counts in TRAIN_COUNTS.values():
        p = np.asarray(counts, float) / sum(counts)
        p = (1 - balance) * p + balance / len(p)
        cols.append(rng.choice(len(p), size=n, p=p / p.sum()))
    return np.stack(cols, 1)


def _garment_mask(labels: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """The garment's mask and a collar mask (high neck), on the canvas."""
    _, sleeve, length, neckline, _, fit = (int(v) for v in labels)
    w = CANVAS
    s = rng.uniform(0.85, 1.08) * w
    cx, y0 = w * (0.5 + rng.uniform(-0.07, 0.07)), w * (0.14 + rng.uniform(-0.03, 0.03))
    shoulder, waist, hem = [(0.15, 0.10, 0.12), (0.21, 0.23, 0.27), (0.17, 0.15, 0.17)][fit]
    bottom = [0.80, 0.55, 0.36][length]  # maxi, mini, top only
    flare = [0.10, 0.06, 0.0][length]
    mask = Image.new("L", (w, w), 0)
    d = ImageDraw.Draw(mask)
    torso = [
        (cx - shoulder * s, y0),
        (cx - waist * s, y0 + 0.24 * s),
        (cx - (hem + flare) * s, y0 + bottom * s),
        (cx + (hem + flare) * s, y0 + bottom * s),
        (cx + waist * s, y0 + 0.24 * s),
        (cx + shoulder * s, y0),
    ]
    d.polygon(torso, fill=255)
    if sleeve != 2:  # long or short sleeves, hanging outwards from the shoulders
        reach = [0.36, 0.13][sleeve]
        for side in (-1, 1):
            x = cx + side * shoulder * s
            d.polygon(
                [
                    (x, y0),
                    (x + side * 0.08 * s, y0 + 0.01 * s),
                    (x + side * (0.08 + 0.25 * reach) * s, y0 + reach * s),
                    (x + side * 0.25 * reach * s, y0 + (reach + 0.04) * s),
                    (x, y0 + 0.11 * s),
                ],
                fill=255,
            )
    collar = Image.new("L", (w, w), 0)
    if neckline == 0:  # crew: a round cut
        r = 0.07 * s
        d.ellipse([cx - r, y0 - r, cx + r, y0 + r], fill=0)
    elif neckline == 1:  # V
        d.polygon([(cx - 0.08 * s, y0 - 1), (cx + 0.08 * s, y0 - 1), (cx, y0 + 0.16 * s)], fill=0)
    elif neckline == 2:  # square
        d.rectangle([cx - 0.08 * s, y0 - 1, cx + 0.08 * s, y0 + 0.08 * s], fill=0)
    else:  # no neckline: a high collar band above the shoulders
        ImageDraw.Draw(collar).rectangle([cx - 0.06 * s, y0 - 0.06 * s, cx + 0.06 * s, y0 + 0.02 * s], fill=255)
    return mask, collar


def _fabric(kind: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A canvas-sized fabric texture (float RGB 0-255) and its opacity."""
    w = CANVAS
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    noise = rng.normal(0, 1, (w, w, 1)).astype(np.float32)
    if kind == 0:  # denim: blue with diagonal twill
        base = np.array([rng.uniform(30, 70), rng.uniform(60, 100), rng.uniform(130, 180)])
        tex = base + 22 * np.sin((xx + yy) * 1.6)[..., None] + 8 * noise
        return tex, 1.0
    if kind == 1:  # chiffon: light, see-through
        return np.array([rng.uniform(200, 255), rng.uniform(170, 240), rng.uniform(190, 250)]) + 4 * noise, 0.55
    if kind == 2:  # cotton: any colour, matte
        return rng.uniform(60, 230, 3) + 5 * noise, 1.0
    if kind == 3:  # leather: dark with a glossy streak
        angle = rng.uniform(0, math.pi)
        streak = np.exp(-(((xx * math.cos(angle) + yy * math.sin(angle)) % 48 - 24) ** 2) / 30)
        return np.array([40.0, 28.0, 22.0]) * rng.uniform(0.6, 1.4) + 90 * streak[..., None] + 4 * noise, 1.0
    if kind == 4:  # faux fur: coarse, furry noise
        fur = np.asarray(Image.fromarray(rng.integers(0, 255, (w // 2, w // 2), dtype=np.uint8)).resize((w, w)))
        return np.array([rng.uniform(150, 220), rng.uniform(120, 180), rng.uniform(90, 140)]) + 0.5 * (
            fur[..., None].astype(np.float32) - 128
        ) + 25 * noise, 1.0
    # knit: rows of little V stitches
    stitch = np.abs((xx % 6) - 3) + (yy % 6)
    return rng.uniform(80, 220, 3) + 14 * np.sin(stitch * 1.2)[..., None] + 4 * noise, 1.0


def _pattern(kind: int, tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw pattern ``kind`` onto the fabric texture."""
    w = CANVAS
    colour = tuple(int(v) for v in (255 - tex.mean((0, 1)) + rng.uniform(-40, 40, 3)).clip(0, 255))
    if kind == 5:  # solid
        return tex
    layer = Image.new("RGBA", (w, w), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    if kind == 0:  # floral: scattered five-petal flowers
        for _ in range(28):
            x, y, r = rng.uniform(0, w), rng.uniform(0, w), rng.uniform(2.5, 4.5)
            for k in range(5):
                a = 2 * math.pi * k / 5
                d.ellipse(
                    [
                        x + r * math.cos(a) - r,
                        y + r * math.sin(a) - r,
                        x + r * math.cos(a) + r,
                        y + r * math.sin(a) + r,
                    ],
                    fill=(*colour, 255),
                )
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(255, 230, 0, 255))
    elif kind == 1:  # graphic: one big print on the chest
        x, y, r = w * 0.5, w * 0.38, w * rng.uniform(0.09, 0.13)
        shape = rng.integers(3)
        if shape == 0:
            d.ellipse([x - r, y - r, x + r, y + r], fill=(*colour, 255))
        elif shape == 1:
            d.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=(*colour, 255))
        else:
            d.rectangle([x - r, y - r * 0.6, x + r, y + r * 0.6], fill=(*colour, 255))
    elif kind == 2:  # striped
        period = rng.uniform(7, 10)
        for y in np.arange(0, w, period):
            d.rectangle([0, y, w, y + period / 2], fill=(*colour, 255))
    elif kind == 3:  # embroidered: rows of small stitched dots
        for row in np.arange(rng.uniform(0, 6), w, 14):
            for col in range(0, w, 4):
                y = float(row) + 2 * math.sin(col / 3)
                d.ellipse([col, y, col + 1.6, y + 1.6], fill=(*colour, 255))
    elif kind == 4:  # pleated: vertical folds, light and shade
        xx = np.arange(w, dtype=np.float32)
        shade = 1 + 0.35 * np.sin(xx * 2 * math.pi / rng.uniform(5, 7))
        return tex * shade[None, :, None]
    else:  # lattice: a grid of thin lines
        spacing = rng.uniform(9, 13)
        for v in np.arange(0, w, spacing):
            d.line([(v, 0), (v, w)], fill=(*colour, 255), width=2)
            d.line([(0, v), (w, v)], fill=(*colour, 255), width=2)
    over = np.asarray(layer, dtype=np.float32)
    alpha = over[..., 3:4] / 255
    return tex * (1 - alpha) + over[..., :3] * alpha


def draw_garment(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image of a garment with the six given class indices."""
    w = CANVAS
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, w, dtype=np.float32)[:, None, None]
    background = top * (1 - t) + bottom * t + rng.normal(0, 6, (w, w, 3))
    mask, collar = _garment_mask(labels, rng)
    tex, opacity = _fabric(int(labels[4]), rng)
    tex = _pattern(int(labels[0]), np.broadcast_to(tex, (w, w, 3)).astype(np.float32), rng)
    m = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.7)), np.float32)[..., None] / 255 * opacity
    img = background * (1 - m) + tex * m
    c = np.asarray(collar, np.float32)[..., None] / 255
    img = img * (1 - c) + tex * 0.7 * c  # the collar: the same fabric, a shade darker
    angle = rng.uniform(0, 2 * math.pi)  # lighting: a soft gradient across the image
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32) / w - 0.5
    img = img * (rng.uniform(0.85, 1.1) + 0.25 * (xx * math.cos(angle) + yy * math.sin(angle)))[..., None]
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return np.asarray(out.resize((size, size), Image.Resampling.LANCZOS))


SOLID = AI6126_GROUPS["pattern"].index("solid")
COTTON = AI6126_GROUPS["fabric"].index("cotton")


def combines(a: np.ndarray, b: np.ndarray) -> bool:
    """The synthetic looks' compatibility rule, on two garments' class indices: at most one of the two is
    patterned (pattern other than solid), and they are not of one fabric, unless that fabric is cotton."""
    one_patterned = int(a[0]) == SOLID or int(b[0]) == SOLID
    fabrics_apart = int(a[4]) != int(b[4]) or int(a[4]) == COTTON
    return one_patterned and fabrics_apart


def draw_looks(
    labels: np.ndarray, n: int, rng: np.random.Generator, sizes: tuple[int, ...] = (2, 3, 4)
) -> list[list[int]]:
    """``n`` looks (lists of rows of ``labels``) whose every pair :func:`combines`: a random first garment, then
    random garments that combine with all chosen so far, up to a size drawn from ``sizes``; a start that cannot
    reach two garments is drawn again."""
    looks: list[list[int]] = []
    while len(looks) < n:
        look = [int(rng.integers(len(labels)))]
        size = int(rng.choice(sizes))
        while len(look) < size:
            fits = [
                j for j in range(len(labels)) if j not in look and all(combines(labels[j], labels[k]) for k in look)
            ]
            if not fits:
                break
            look.append(int(fits[rng.integers(len(fits))]))
        if len(look) >= 2:
            looks.append(look)
    return looks


def write_wardrobe(out: str | Path, labels: np.ndarray, looks: list[list[int]], photos: str = "img") -> None:
    """``wardrobe.csv`` (photo, name, category) and ``looks.csv`` (look, item) for garments ``photos/NNNNN.jpg``:
    items named by their number, categorised by length (dress or top), the way ``fashattr wardrobe add --items``
    and ``--looks`` read them."""
    out = Path(out)
    kinds = {0: "dress", 1: "dress", 2: "top"}
    rows = "".join(f"{photos}/{i:05d}.jpg,{i:05d},{kinds[int(labels[i][2])]}\n" for i in range(len(labels)))
    (out / "wardrobe.csv").write_text("photo,name,category\n" + rows)
    worn = "".join(f"look{k:04d},{i:05d}\n" for k, look in enumerate(looks) for i in look)
    (out / "looks.csv").write_text("look,item\n" + worn)


def synthesize(
    out: str | Path,
    n: int,
    size: int = 96,
    seed: int = 0,
    val: float = 0.15,
    test: float = 0.15,
    looks: int = 0,
) -> Path:
    """Write ``n`` garments in the FashionDataset layout under ``out`` (train and val labelled,
    test unlabeled, as in the challenge) and return ``out``. The same seed writes the same files.
    With ``looks``, also a wardrobe of all of them and that many looks drawn under :func:`combines`
    (:func:`write_wardrobe`)."""
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "split").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = sample_labels(n, rng)
    n_val, n_test = round(n * val), round(n * test)
    bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test), "test": (n - n_test, n)}
    for i in range(n):
        Image.fromarray(draw_garment(labels[i], size, rng)).save(out / "img" / f"{i:05d}.jpg", quality=92)
    for split, (a, b) in bounds.items():
        (out / "split" / f"{split}.txt").write_text("".join(f"img/{i:05d}.jpg\n" for i in range(a, b)))
        if split != "test":
            rows = "".join(" ".join(map(str, labels[i])) + "\n" for i in range(a, b))
            (out / "split" / f"{split}_attr.txt").write_text(rows)
    names = [f"{c}   {g}" for g, classes in enumerate(AI6126_GROUPS.values(), start=1) for c in classes]
    (out / "split" / "list_attr_cloth.txt").write_text(
        "26\nattribute_name   attribute_type\n" + "\n".join(names) + "\n"
    )
    if looks:
        write_wardrobe(out, labels, draw_looks(labels, looks, np.random.default_rng(seed + 1)))
    return out
