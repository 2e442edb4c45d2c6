"""The preprocessing spec: one record shared by training, export metadata, verify and deployment.

"ONNX less accurate than .pt" is usually a preprocessing mismatch (ultralytics #24893), so the
exact transform is recorded in ``train.json`` and embedded in every artifact, and every
consumer rebuilds its transform from this record rather than from its own defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from exporter.core.errors import InputFileError

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICY = "resize_shorter_side_then_center_crop"
# Resizing the shorter side first makes the work grow with the aspect ratio: a 1,000,000x1
# PNG (3 kB) became a 32,000,000x32 image (5.9 GB) before the crop kept 32x32 of it. Up to
# 100:1 the resized image is at most 100x the model's input; the widest real photographs
# (panoramas, 360-degree strips) stay far below that.
MAX_ASPECT_RATIO = 100


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the model's input tensor.

    ``value_range`` is the range of pixel values before normalisation: images are converted
    to RGB, scaled from uint8 to [0, 1], then ``(x - mean) / std`` per channel, NCHW float32.
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = RESIZE_POLICY
    resize_size: int | None = None  # shorter side before the crop; None = image_size
    channel_order: str = "RGB"
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    dtype: str = "float32"
    interpolation: str = "bilinear"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"], d["value_range"] = (
            list(self.mean),
            list(self.std),
            list(self.value_range),
        )
        d["resize_size"] = self.resize_size or self.image_size
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        try:
            return cls(
                image_size=int(d["image_size"]),
                mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
                resize=str(d.get("resize", RESIZE_POLICY)),
                resize_size=int(d.get("resize_size") or d["image_size"]),
                channel_order=str(d.get("channel_order", "RGB")),
                layout=str(d.get("layout", "NCHW")),
                value_range=tuple(float(v) for v in d.get("value_range", (0.0, 1.0))),  # type: ignore[arg-type]
                dtype=str(d.get("dtype", "float32")),
                interpolation=str(d.get("interpolation", "bilinear")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(f"invalid preprocessing record: {exc}") from exc

    def to_array(self, img: Any) -> np.ndarray:
        """A decoded PIL image → the model's ``(3, H, W)`` float32 input, with PIL and NumPy.

        The one deterministic transform (predict, Ray actors, serve, verify, training's eval
        images), bit-identical to torchvision's ``Resize(resize_size, antialias=True)`` →
        ``CenterCrop(image_size)`` → ``ToTensor()`` → ``Normalize(mean, std)`` on a PIL
        image (tests/core/test_preprocess.py compares them), so inference needs no torch
        import: torch and torchvision were most of a Ray actor's start.
        """
        import numpy as np
        from PIL import Image

        img = to_rgb(img)
        w, h = img.size
        # torchvision's _compute_resized_output_size for an int size: the shorter side
        # becomes ``short``, the longer one int(short * longer / shorter), truncated.
        short = self.resize_size or self.image_size
        new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        if (new_w, new_h) != (w, h):  # torchvision leaves an image of that size as it is
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        pixels = np.asarray(img.crop(_center_box(img.size, self.image_size)), dtype=np.uint8)
        # ToTensor divides by 255 and Normalize subtracts and divides in float32, one
        # operation at a time (no reciprocal, no fused multiply-add): the same here.
        x = pixels.transpose(2, 0, 1).astype(np.float32)
        x /= np.float32(255)
        x -= np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        x /= np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        return x

    def eval_transform(self) -> Callable[[Any], Any]:
        """:meth:`to_array` as a torch tensor, for training's data loaders (a partial, not a
        lambda: data loader workers may be spawned, and they unpickle the transform)."""
        return partial(_tensor, self)

    def train_transform(self, *, augment: bool) -> Callable[[Any], Any]:
        """Training transform: eval transform plus random crop with padding and h-flip.

        The augmentations are torchvision's, on the eval transform's tensor: padding,
        cropping and flipping move pixels without changing them, so this equals applying
        them before the normalisation (as the transform did before :meth:`to_array`).
        """
        from torchvision import transforms as T

        if not augment:
            return self.eval_transform()
        pad = max(1, self.image_size // 8)  # CIFAR's classic 4 px at 32 px
        return T.Compose(
            [
                self.eval_transform(),
                T.RandomCrop(self.image_size, padding=pad, padding_mode="reflect"),
                T.RandomHorizontalFlip(),
            ]
        )


def _tensor(pre: Preprocessing, img: Any) -> Any:
    import torch

    return torch.from_numpy(pre.to_array(img))


def _center_box(size: tuple[int, int], crop: int) -> tuple[int, int, int, int]:
    """torchvision's ``center_crop`` as one PIL crop box: a side shorter than ``crop`` is
    zero-padded (the smaller half before it; PIL fills a box outside the image with 0, as
    torchvision pads), a longer one cropped at ``round((n - crop) / 2.0)`` (Python's round:
    halves go to the even number, as torchvision's ``int(round(...))``). Cropping before the
    array conversion keeps a 100:1 image's resized strip out of NumPy."""

    def start(n: int) -> int:
        return -((crop - n) // 2) if crop > n else round((n - crop) / 2.0)

    left, top = start(size[0]), start(size[1])
    return left, top, left + crop, top + crop


# Pillow's modes for one channel wider than 8 bits: 16-bit PNG/TIFF open as "I;16*" (or "I"
# in older Pillow), float TIFFs as "F". Pillow's own convert("RGB") clips them at 255, so a
# 16-bit image became almost white (python-pillow/Pillow #2574, #1108); these are rescaled instead.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(img: Any) -> Any:
    """Any decoded PIL image as 8-bit RGB: the one conversion training and deployment share.

    Grayscale, palette (transparent pixels composited as RGBA first), CMYK and RGBA become
    3-channel RGB (alpha dropped). 16-bit images are scaled by 255/65535; 32-bit integer
    images whose values fit 16 bits likewise (wider ones by their own maximum); float images
    in [0, 1] by 255, others clipped to [0, 255].
    """
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_MODES:
        return _wide_to_rgb(img)
    if img.mode in ("P", "PA") and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def size_problem(width: int, height: int) -> str | None:
    """Why an image of this size cannot be preprocessed, or None: an empty image, or one
    more than ``MAX_ASPECT_RATIO`` times longer than wide (checked before decoding)."""
    if width < 1 or height < 1:
        return f"{width}x{height} px: the image is empty"
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return (
            f"{width}x{height} px: the aspect ratio is above {MAX_ASPECT_RATIO}:1 (resizing its "
            "shorter side would build a huge image); crop it first"
        )
    return None


def finite_problem(img: Any) -> str | None:
    """Why a decoded image's pixels are unusable, or None: a float image holding NaN or Inf
    (Pillow's mode "F") would otherwise become an arbitrary, confidently classified image."""
    if getattr(img, "mode", None) != "F":
        return None
    import numpy as np

    values = np.asarray(img)
    if np.isfinite(values).all():
        return None
    return f"{int((~np.isfinite(values)).sum())} pixel values are NaN or Inf"


def _wide_to_rgb(img: Any) -> Any:
    import numpy as np
    from PIL import Image

    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():  # np.clip would turn NaN into an arbitrary grey
        raise ValueError("the image has NaN or Inf pixel values")
    top = float(values.max()) if values.size else 0.0
    if img.mode == "F":
        scale = 255.0 if top <= 1.0 else 1.0
    elif img.mode.startswith("I;16") or 255 < top <= 65535:
        scale = 255.0 / 65535.0
    elif top <= 255:
        scale = 1.0
    else:
        scale = 255.0 / top
    gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")
