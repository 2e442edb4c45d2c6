"""The one image → RGB conversion and the one image → input transform shared by training,
predict, Ray, verify and serve."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from exporter.core.preprocess import Preprocessing, to_rgb
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


# The NumPy transform against the torchvision one it replaced, on varied images: odd sizes,
# portrait and landscape, smaller than the crop (padding), already at size, the 100:1 cap.
SIZES = [(32, 32), (31, 47), (47, 31), (33, 33), (301, 199), (17, 9), (1, 1), (1000, 10),
         (10, 1000), (101, 1), (256, 256), (255, 257)]  # fmt: skip
SPECS = [(32, None), (33, None), (224, 256), (32, 28), (29, 40)]  # (image_size, resize_size)
MODES = ["RGB", "L", "RGBA", "LA", "P", "P-transparent", "I;16", "CMYK"]


def _torchvision_eval(pre: Preprocessing) -> Any:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Lambda(to_rgb),
            T.Resize(pre.resize_size or pre.image_size, antialias=True),
            T.CenterCrop(pre.image_size),
            T.ToTensor(),
            T.Normalize(pre.mean, pre.std),
        ]
    )


def _png(tmp_path: Path, size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    """A random image of ``mode``, written as a PNG (or TIFF for CMYK) and decoded again."""
    rng = np.random.default_rng(seed)
    w, h = size
    rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "P-transparent":
        img = rgba.convert("RGB").quantize(16)
        img.info["transparency"] = 3
    else:
        img = rgba.convert(mode)
    path = tmp_path / f"{mode}-{w}x{h}-{seed}.{'tiff' if mode == 'CMYK' else 'png'}"
    img.save(path, **({"transparency": 3} if mode == "P-transparent" else {}))
    with Image.open(path) as back:
        back.load()
        return back.copy()


@pytest.fixture(scope="module")
def varied_images(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Image.Image]]:
    folder = tmp_path_factory.mktemp("varied")
    return [
        (f"{mode} {w}x{h}", _png(folder, (w, h), mode, seed=i))
        for i, (w, h) in enumerate(SIZES)
        for mode in MODES
    ]


@pytest.mark.parametrize(("image_size", "resize_size"), SPECS)
def test_to_array_is_bit_identical_to_torchvision(
    varied_images: list[tuple[str, Image.Image]], image_size: int, resize_size: int | None
) -> None:
    pre = Preprocessing(image_size=image_size, resize_size=resize_size)
    reference = _torchvision_eval(pre)
    for name, img in varied_images:
        got = pre.to_array(img)
        want = reference(img).numpy()
        assert got.dtype == np.float32 and got.shape == (3, image_size, image_size)
        assert np.array_equal(got, want), name
    name, img = varied_images[1]  # training's tensor is the same array
    assert np.array_equal(pre.eval_transform()(img).numpy(), reference(img).numpy()), name
    assert len(varied_images) == len(SIZES) * len(MODES)


def test_other_means_and_stds_are_applied_exactly() -> None:
    pre = Preprocessing(image_size=24, mean=(0.5, 0.1, 0.9), std=(0.3, 0.7, 0.05))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (37, 50, 3), dtype=np.uint8))
    assert np.array_equal(pre.to_array(img), _torchvision_eval(pre)(img).numpy())


def test_inference_needs_no_torch() -> None:
    # A Ray actor or `tlx predict` process imports neither: they were most of its start.
    code = (
        "import sys; import numpy as np; from PIL import Image;"
        "from exporter.core.preprocess import Preprocessing;"
        "Preprocessing(image_size=32).to_array(Image.new('L', (40, 50)));"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_augmented_train_transform_draws_as_before(tmp_path: Path) -> None:
    # The augmentations now run on the tensor; same random draws, same pixels.
    import torch
    from torchvision import transforms as T

    pre = Preprocessing(image_size=32)
    old = T.Compose(
        [
            T.Lambda(to_rgb),
            T.Resize(32, antialias=True),
            T.CenterCrop(32),
            T.RandomCrop(32, padding=4, padding_mode="reflect"),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(pre.mean, pre.std),
        ]
    )
    new = pre.train_transform(augment=True)
    for i, size in enumerate([(32, 32), (45, 61), (80, 40)]):
        img = _png(tmp_path, size, "RGB", seed=i)
        for seed in range(8):
            torch.manual_seed(seed)
            want = old(img)
            torch.manual_seed(seed)
            assert torch.equal(new(img), want), (size, seed)


def test_eval_transform_pickles() -> None:
    # Data loader workers may be spawned: they receive the transform pickled.
    pre = Preprocessing(image_size=32)
    img = Image.new("RGB", (40, 40), (10, 200, 30))
    tf = pickle.loads(pickle.dumps(pre.eval_transform()))
    assert np.array_equal(tf(img).numpy(), pre.to_array(img))
