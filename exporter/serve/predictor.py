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
from exporter.core.errors import GateFailed, InputFileError, UsageError
from exporter.core.preprocess import Preprocessing
from exporter.runtimes.base import Artifact, Runtime, get_runtime
from exporter.serve.choice import choose_artifact
from exporter.serve.images import BadImage, open_image

if TYPE_CHECKING:
    from PIL import Image

    from exporter.core.runfolder import Run

    ImageInput = str | Path | Image.Image | np.ndarray


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
    """A loaded artifact plus its preprocessing and class names. Use as a context manager.

    Attributes:
        artifact: the artifact being run (hash-checked on load).
        runtime_name: the registry name of the runtime (``ort-cpu``, ``eager``, ...).
        classes: class names in output order.
        image_size: the model's input H and W.
        preprocessing: the recorded transform.
    """

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
        self._transform: Callable[[Any], Any] | None = None

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Decode (paths, arrays) and transform images → ``(N, 3, H, W)`` float32.

        Raises:
            InputFileError: a path is not a readable image (the message names it).
        """
        if self._transform is None:
            self._transform = self.preprocessing.eval_transform()
        n, size = len(images), self.image_size
        out = np.empty((n, 3, size, size), dtype=np.float32)
        good, _ = _decode(images, None)  # raises on the first unreadable one
        for i, img in enumerate(good):
            out[i] = self._transform(img).numpy()
        return out

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed ``(N, 3, H, W)`` float32 → ``(N, C)`` float32 logits.

        Raises:
            UsageError: wrong rank, channels, size or dtype.
        """
        x = np.asarray(batch)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1:
            raise UsageError(f"expected a (N, 3, H, W) batch, got shape {tuple(x.shape)}")
        if not self.artifact.accepts_hw(x.shape[2], x.shape[3]):
            raise UsageError(
                f"{self.artifact.name} takes {self.image_size}x{self.image_size} inputs only, "
                f"got {x.shape[2]}x{x.shape[3]}"
            )
        if x.dtype != np.float32:
            raise UsageError(f"expected float32 input, got {x.dtype}")
        return np.asarray(self.runtime.infer(np.ascontiguousarray(x)), dtype=np.float32)

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        top_k: int = PredictConfig.top_k,
        batch_size: int = PredictConfig.batch_size,
        progress: Callable[[str, float, float], None] | None = None,
        on_error: Callable[[BadImage], None] | None = None,
        keep_logits: bool = False,
    ) -> list[Prediction]:
        """Classify ``images`` ``batch_size`` at a time.

        Args:
            images: paths, PIL images or HxWx3 uint8 RGB arrays.
            top_k: classes per image (capped at the number of classes).
            batch_size: images per runtime call.
            progress: called ``(description, done, total)`` after each batch.
            on_error: called for each unreadable image, which is then skipped; None = the
                first one raises.
            keep_logits: also return each image's raw logits.

        Raises:
            UsageError: top_k or batch_size out of range.
            InputFileError: an unreadable image when ``on_error`` is None.
            GateFailed: the model returned NaN/Inf logits (exit 1).
        """
        check_int("--top-k", top_k, MAX_TOP_K)
        check_int("--batch-size", batch_size, MAX_BATCH)
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
        self.runtime.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(
    chunk: Sequence[ImageInput], on_error: Callable[[BadImage], None] | None, *, start: int = 0
) -> tuple[list[Any], list[str]]:
    """Decode a chunk (paths, PIL images, HxWx3 uint8 arrays); bad ones go to ``on_error``."""
    good: list[Any] = []
    sources: list[str] = []
    for i, item in enumerate(chunk, start=start):
        if isinstance(item, str | Path):
            img, source = open_image(item), str(item)
        elif isinstance(item, np.ndarray):
            source = f"<array {i}>"
            img = _from_array(item, source)
        else:
            img, source = item, f"<image {i}>"
        if isinstance(img, BadImage):
            if on_error is None:
                raise InputFileError(img.line())
            on_error(img)
            continue
        good.append(img)
        sources.append(source)
    return good, sources


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
    """A :class:`Predictor` on the run's chosen artifact (see :func:`choose_artifact`).

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
    art, runtime_name = choose_artifact(run, device=device, variant=variant, runtime=runtime)
    info = art.run if art.run is not None else open_run(run)  # the run the choice opened
    shared = info.manifest.metadata
    classes, pre = _recorded(shared, info.class_names, info.preprocessing)
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


def _recorded(
    shared: dict[str, Any], classes: list[str], pre: Preprocessing
) -> tuple[list[str], Preprocessing]:
    """Class names and preprocessing from the manifest's metadata (train.json's otherwise)."""
    names = shared.get("class_names")
    if isinstance(names, list) and names:
        classes = [str(c) for c in names]
    rec = shared.get("preprocessing")
    if isinstance(rec, dict):
        pre = Preprocessing.from_dict(rec)
    return classes, pre
