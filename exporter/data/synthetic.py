"""A learnable synthetic dataset made by tlx itself: 10 classes of coloured shapes.

Offline demos and tests need data that a model can actually learn (random labels would
prove nothing), generated in milliseconds and bit-identical for a given seed. Each class
is a shape (disc, square, ring, cross, ...) drawn in its own colour (eight hues 45° apart,
then white and black) on a flat background of the ImageNet mean colour, with a little
jitter in position, size, colour and pixel noise. Images are made at a native 32 px as
uint8 HWC arrays and then go through the same :class:`~exporter.core.preprocess.Preprocessing`
transforms as real images.

Why this design: the offline demo trains the standard VGG16 head on a *random-init*
frozen trunk. Random deep ReLU features of any two images are highly correlated (a large
common mode, the same for every image), so only a class signal that moves the whole
feature vector survives 13 random conv layers strongly enough for the head to pick up in a
few dozen steps. A whole-shape colour per class does; a background at the normalisation
mean is ~0 after ``(x - mean) / std`` and so adds no nuisance (the trunk has zero biases at
init, so a zero input gives a zero response). Shape still differs per class, but colour
carries most of what a random trunk sees (see benchmarks/RESULTS.md, "Synthetic
learnability").
"""

from __future__ import annotations

import numpy as np

from exporter.core.preprocess import IMAGENET_MEAN

SYNTHETIC_CLASS_NAMES = (
    "disc",
    "square",
    "ring",
    "cross",
    "triangle",
    "h_stripes",
    "v_stripes",
    "checker",
    "diamond",
    "frame",
)
NATIVE_SIZE = 32
NUM_CLASSES = len(SYNTHETIC_CLASS_NAMES)
# Separate random streams per split so that growing train_size does not change val.
_SPLIT_STREAM = {"train": 0, "val": 1}


def make_synthetic(
    n: int, *, seed: int, split: str = "train", size: int = NATIVE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` images and labels, deterministic in ``(seed, split)`` (``"train"`` and
    ``"val"`` are independent streams): uint8 ``(n, size, size, 3)`` and int64 ``(n,)``;
    labels are balanced (cycled, then shuffled)."""
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    rng = np.random.default_rng([int(seed), _SPLIT_STREAM[split]])
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)

    # Per-image geometry in unit coordinates; images are centred on (cx, cy) with half-size r.
    cx = rng.uniform(0.45, 0.55, n)[:, None, None]
    cy = rng.uniform(0.45, 0.55, n)[:, None, None]
    r = rng.uniform(0.4, 0.46, n)[:, None, None]
    g = (np.arange(size) + 0.5) / size
    yy, xx = g[None, :, None], g[None, None, :]
    dx, dy = (xx - cx) / r, (yy - cy) / r  # (n, size, size) normalised offsets
    adx, ady = np.abs(dx), np.abs(dy)
    rad = np.sqrt(dx * dx + dy * dy)
    inside = (adx <= 1) & (ady <= 1)
    period = rng.uniform(0.45, 0.6, n)[:, None, None]

    masks = np.zeros((n, size, size), dtype=bool)
    shape_fns = (
        lambda: rad <= 1,  # disc
        lambda: inside & (adx <= 0.8) & (ady <= 0.8),  # square
        lambda: (rad <= 1) & (rad >= 0.55),  # ring
        lambda: inside & ((adx <= 0.28) | (ady <= 0.28)),  # cross
        lambda: inside & (dy >= -0.9) & (adx <= (dy + 0.9) / 1.9),  # triangle
        lambda: inside & (np.floor(dy / period) % 2 == 0),  # horizontal stripes
        lambda: inside & (np.floor(dx / period) % 2 == 0),  # vertical stripes
        lambda: inside & ((np.floor(dx / period) + np.floor(dy / period)) % 2 == 0),  # checker
        lambda: adx + ady <= 1,  # diamond
        lambda: inside & ((adx >= 0.65) | (ady >= 0.65)),  # frame
    )
    for c, fn in enumerate(shape_fns):
        sel = labels == c
        if sel.any():
            masks[sel] = fn()[sel]

    # Foreground colour tied to the class so colour and shape both carry signal: classes 0-7
    # get saturated hues 45° apart (small jitter), class 8 white and class 9 black.
    hue = (np.minimum(labels, 7) / 8 + rng.normal(0.0, 0.01, n)) % 1.0
    sat = np.where(labels >= 8, 0.0, rng.uniform(0.9, 1.0, n))
    val = np.where(labels == 9, 0.0, rng.uniform(0.9, 1.0, n))
    fg = _hsv_to_rgb(hue, sat, val)  # (n, 3)
    # Background at the ImageNet mean (≈ 0 after normalisation) with a slight tint jitter.
    bg = np.asarray(IMAGENET_MEAN) + rng.normal(0.0, 0.02, (n, 3))
    img = np.where(masks[..., None], fg[:, None, None, :], bg[:, None, None, :])
    img = img + rng.normal(0.0, 0.06, img.shape)
    images = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return images, labels


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB in [0, 1] (colorsys works one pixel at a time)."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ],
        0,
    )  # (6, n, 3)
    return table[i, np.arange(len(h))]
