"""The one image → RGB conversion shared by training, predict and serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exporter.core.preprocess import to_rgb
from exporter.data.imagefolder import open_rgb

RAMP16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520


def _levels(img: Image.Image) -> tuple[int, int, int]:
    a = np.asarray(img)
    assert img.mode == "RGB" and a.shape[2] == 3
    return int(a.min()), int(a.max()), len(np.unique(a[..., 0]))


def test_16_bit_grayscale_png_keeps_its_range(tmp_path: Path) -> None:
    # Pillow's own convert("RGB") clips at 255: this ramp would become nearly all white.
    path = tmp_path / "ramp16.png"
    Image.fromarray(RAMP16).save(path)
    lo, hi, levels = _levels(open_rgb(path))
    assert (lo, hi) == (0, 255) and levels == 256
    expected = np.rint(RAMP16 / 257.0).astype(np.uint8)
    assert np.array_equal(np.asarray(open_rgb(path))[..., 1], expected)


def test_16_bit_big_endian_tiff(tmp_path: Path) -> None:
    path = tmp_path / "ramp16.tif"
    Image.frombytes("I;16B", (64, 64), RAMP16.astype(">u2").tobytes()).save(path)
    with Image.open(path) as im:
        im.load()
        got = np.asarray(to_rgb(im))[..., 0]
    assert np.array_equal(got, np.rint(RAMP16 / 257.0).astype(np.uint8))


@pytest.mark.parametrize(
    ("values", "mode", "top"),
    [
        (np.linspace(0, 1, 256, dtype=np.float32), "F", 255),  # float in [0, 1]
        (np.linspace(0, 300, 256, dtype=np.float32), "F", 255),  # float beyond: clipped
        (np.arange(256, dtype=np.int32), "I", 255),  # 8-bit values in a 32-bit image
        (np.arange(256, dtype=np.int32) * 257, "I", 255),  # 16-bit values (older Pillow PNGs)
        (np.arange(256, dtype=np.int32) * 100_000, "I", 255),  # wider: by its own maximum
    ],
)
def test_wide_modes_are_rescaled_not_clipped(values: np.ndarray, mode: str, top: int) -> None:
    img = Image.fromarray(np.tile(values, (4, 1)), mode=mode)
    lo, hi, levels = _levels(to_rgb(img))
    assert lo == 0 and hi == top and levels > 200


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "1", "P"])
def test_eight_bit_modes_become_rgb(mode: str) -> None:
    img = Image.new(mode, (8, 8))
    assert to_rgb(img).mode == "RGB"


def test_transparent_palette_is_composited_through_rgba() -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    img.info["transparency"] = 0
    assert np.asarray(to_rgb(img))[0, 0].tolist() == [200, 10, 10]
