"""``exporter.load(RUN)``: classify images with a run's verified artifact.

The predictor runs the artifact through the runtime registry (the same ``Runtime.infer`` as
verify and bench, after the manifest hash check) and preprocesses with the record shipped
in the manifest's metadata, so predictions match what verify checked (a preprocessing
mismatch is the usual cause of "the ONNX model is less accurate": ultralytics #24893).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.choices import device_kind
from exporter.core.config import MAX_BATCH, MAX_TOP_K, PredictConfig, check_int
from exporter.core.errors import GateFailed, InputFileError, PredictInputError, UsageError
from exporter.core.preprocess import Preprocessing, finite_problem, size_problem
from exporter.runtimes.base import Artifact, Runtime, get_runtime
from exporter.serve.choice import choose
from exporter.serve.images import BadImage, open_image

if TYPE_CHECKING:
    from PIL import Image

    from exporter.core.runfolder import Run

    ImageInput = str | Path | Image.Image | np.ndarray
    ImagesInput = ImageInput | Sequence[ImageInput]


@dataclass(frozen=True)
class Prediction:
    """One image's result: the top classes with softmax probabilities, best first."""

    source: str
    top: list[tuple[str, float]]
    logits: np.ndarray | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "top": [{"class": c, "probability": p} for c, p in self.top],
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row max is subtracted first)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_classes(logits: np.ndarray, classes: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row, the ``k`` best (class, probability) pairs; ties keep the lower index first."""
    probs = softmax(logits)
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [(classes[j], float(row[j])) for j in idx] for row, idx in zip(probs, order, strict=True)
    ]


class Predictor:
    """A loaded (hash-checked) artifact plus its recorded preprocessing and its class names in
    output order. Use as a context manager."""

    def __init__(
        self,
        artifact: Artifact,
        runtime: Runtime,
        *,
        classes: list[str],
        preprocessing: Preprocessing,
    ) -> None:
        self.artifact = artifact
        self.runtime = runtime
        self.runtime_name = runtime.name
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.image_size = artifact.image_size
        self._closed = False

    def preprocess(self, images: ImagesInput) -> np.ndarray:
        """Decode (paths, arrays) and transform images → ``(N, 3, H, W)`` float32.

        Raises:
            PredictInputError: an item is not a usable image (the message names it).
        """
        self._check_open()
        images = as_image_list(images)
        n, size = len(images), self.image_size
        out = np.empty((n, 3, size, size), dtype=np.float32)
        good, _ = _decode(images, None)  # raises on the first unreadable one
        for i, img in enumerate(good):
            out[i] = self.preprocessing.to_array(img)
        return out

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed ``(N, 3, H, W)`` float32 → ``(N, C)`` float32 logits.

        Raises:
            PredictInputError: wrong type, rank, channels, size or dtype; NaN/Inf values (a
                quantized artifact would turn them into confident, finite logits).
        """
        self._check_open()
        try:
            x = np.asarray(batch)
        except (TypeError, ValueError) as exc:  # ragged nested lists and the like
            raise PredictInputError(f"expected a (N, 3, H, W) float32 array: {exc}") from None
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1:
            raise PredictInputError(f"expected a (N, 3, H, W) batch, got shape {tuple(x.shape)}")
        if not self.artifact.accepts_hw(x.shape[2], x.shape[3]):
            raise PredictInputError(
                f"{self.artifact.name} takes {self.image_size}x{self.image_size} inputs only, "
                f"got {x.shape[2]}x{x.shape[3]}"
            )
        if x.dtype != np.float32:
            raise PredictInputError(f"expected float32 input, got {x.dtype}")
        finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise PredictInputError(
                f"input rows {bad[:8].tolist()} hold NaN or Inf values ({len(bad)} of {len(x)})"
            )
        return np.asarray(self.runtime.infer(np.ascontiguousarray(x)), dtype=np.float32)

    def predict(
        self,
        images: ImagesInput,
        *,
        top_k: int = PredictConfig.top_k,
        batch_size: int = PredictConfig.batch_size,
        progress: Callable[[str, float, float], None] | None = None,
        on_error: Callable[[BadImage], None] | None = None,
        keep_logits: bool = False,
    ) -> list[Prediction]:
        """Classify ``images`` ``batch_size`` at a time.

        Args:
            images: a sequence of paths, PIL images or HxWx3 (or HxW) uint8 RGB arrays; one
                such image alone counts as a list of one; an NxHxWx3 array is N images.
            top_k: classes per image (capped at the number of classes).
            progress: called ``(description, done, total)`` after each batch.
            on_error: called for each unreadable image, which is then skipped; None = the
                first one raises.

        Returns:
            One :class:`Prediction` per usable image, in input order.

        Raises:
            PredictInputError: top_k or batch_size out of range; the predictor is closed;
                ``images`` is no image or sequence of images; an item is unusable (not an
                image, unreadable, empty, too elongated, NaN/Inf pixels) when ``on_error`` is
                None. The message names the item by its path or index.
            GateFailed: the model returned NaN/Inf logits (exit 1).
        """
        self._check_open()
        try:
            check_int("--top-k", top_k, MAX_TOP_K)
            check_int("--batch-size", batch_size, MAX_BATCH)
        except UsageError as exc:
            raise PredictInputError(str(exc)) from None
        images = as_image_list(images)
        results: list[Prediction] = []
        total = len(images)
        for start in range(0, total, batch_size):
            chunk = images[start : start + batch_size]
            good, sources = _decode(chunk, on_error, start=start)
            if good:
                logits = self.logits(self.preprocess(good))
                if not np.isfinite(logits).all():
                    raise GateFailed(
                        f"{self.artifact.name} on {self.runtime_name} returned NaN/Inf logits "
                        f"for {sources[0]} (batch of {len(good)}); run `tlx verify` on the run"
                    )
                for src, row, top in zip(
                    sources, logits, top_classes(logits, self.classes, top_k), strict=True
                ):
                    results.append(Prediction(src, top, row.copy() if keep_logits else None))
            if progress:
                progress("predicting", min(start + batch_size, total), total)
        return results

    def close(self) -> None:
        """Release the runtime; later calls raise :class:`PredictInputError`. Idempotent."""
        if not self._closed:
            self._closed = True
            self.runtime.close()

    def _check_open(self) -> None:
        if self._closed:
            raise PredictInputError(
                "this predictor is closed: call exporter.load(RUN) again (or use it in a "
                "`with` block that is still open)"
            )

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_image_list(images: Any) -> list[Any]:
    """``predict``'s argument as a list of items: one image alone is a list of one.

    Raises:
        PredictInputError: neither an image nor a sequence of images (bytes included: pass
            the path or a decoded image).
    """
    if isinstance(images, str | Path) or _is_pil(images):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            return [images]  # iterating would give one "image" per row
        if images.ndim == 4:
            return list(images)
        raise PredictInputError(
            f"expected an HxWx3 image or an NxHxWx3 batch of images, got an array of shape "
            f"{images.shape}"
        )
    if isinstance(images, bytes | bytearray | memoryview) or not hasattr(images, "__iter__"):
        raise PredictInputError(
            f"expected an image (path, PIL image, HxWx3 uint8 array) or a sequence of them, "
            f"got {type(images).__name__}"
        )
    return list(images)


def _is_pil(item: Any) -> bool:
    from PIL import Image

    return isinstance(item, Image.Image)


def _decode(
    chunk: Sequence[ImageInput], on_error: Callable[[BadImage], None] | None, *, start: int = 0
) -> tuple[list[Any], list[str]]:
    """Decode a chunk (paths, PIL images, HxWx3 uint8 arrays); bad ones go to ``on_error``."""
    good: list[Any] = []
    sources: list[str] = []
    for i, item in enumerate(chunk, start=start):
        if isinstance(item, str | Path) and str(item):
            img, source = open_image(item), str(item)
        elif isinstance(item, np.ndarray):
            source = f"<array {i}>"
            img = _from_array(item, source)
        elif _is_pil(item):
            source = f"<image {i}>"
            problem = size_problem(item.width, item.height) or finite_problem(item)
            img = BadImage(source, problem) if problem else item
        else:
            source = f"<item {i}>"
            img = BadImage(
                source,
                f"{type(item).__name__} {shown_value(item)} is not an image: pass a path, a PIL "
                "image or an HxWx3 uint8 array",
            )
        if isinstance(img, BadImage):
            if on_error is None:
                raise PredictInputError(img.line())
            on_error(img)
            continue
        good.append(img)
        sources.append(source)
    return good, sources


def shown_value(item: Any, limit: int = 40) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _from_array(array: np.ndarray, source: str) -> Image.Image | BadImage:
    """An HxW or HxWx3/4 uint8 array (RGB order) as a PIL image."""
    from PIL import Image

    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (3, 4))
    ):
        return BadImage(
            source, f"expected an HxWx3 uint8 RGB array, got {array.dtype} {array.shape}"
        )
    problem = size_problem(array.shape[1], array.shape[0])
    if problem is not None:
        return BadImage(source, problem)
    return Image.fromarray(np.ascontiguousarray(array))


def load(
    run: Run | str | Path,
    *,
    runtime: str | None = None,
    variant: str | None = None,
    device: str = PredictConfig.device,
    threads: int | None = None,
    public_key: str | Path | None = None,
) -> Predictor:
    """A :class:`Predictor` on the artifact :func:`~exporter.serve.choice.choose` picks.

    Args:
        public_key: check the run folder against ``RUN/model.sig`` with this PEM public key
            first (``tlx sign``); no file of the run is opened before that check passes.

    Raises:
        InputFileError / IntegrityError: bad run folder or manifest, or a file's hash differs;
            with ``public_key``: no signature, another key's, or a changed, added or removed
            file.
        UsageError: unknown runtime or variant.
        RuntimeUnavailable: the runtime cannot run on ``device`` here (exit 3).
    """
    from exporter.core.runfolder import open_run

    device_kind(device)
    if public_key is not None:
        from exporter.sign.verification import verified_run

        run = verified_run(run, public_key)
    choice = choose(run, device=device, variant=variant, runtime=runtime)
    art, runtime_name = choice.artifact, choice.runtime
    info = art.run if art.run is not None else open_run(run)  # the run the choice opened
    # Class names and preprocessing as the manifest records them, else as train.json does.
    shared = info.manifest.metadata
    names, rec = shared.get("class_names"), shared.get("preprocessing")
    classes = [str(c) for c in names] if isinstance(names, list) and names else info.class_names
    pre = Preprocessing.from_dict(rec) if isinstance(rec, dict) else info.preprocessing
    if len(classes) != art.num_classes:
        raise InputFileError(
            f"manifest.json lists {len(classes)} classes but {art.name} has {art.num_classes} "
            "outputs; re-export with `tlx export RUN --force`"
        )
    if pre.image_size != art.image_size:
        pre = Preprocessing.from_dict({**pre.to_dict(), "image_size": art.image_size})
    rt = get_runtime(runtime_name)(art, device, precision=art.precision, threads=threads)
    try:
        rt.load()
    except BaseException:
        rt.close()
        raise
    return Predictor(art, rt, classes=classes, preprocessing=pre)
