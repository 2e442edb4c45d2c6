"""Real transfer tasks made offline: image folders and a pretrained VGG16 trunk.

Sources that ship in packages (nothing is downloaded):
- Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (IDX files under
  /usr/share/datasets/fashion-mnist; ``dpkg -L dataset-fashion-mnist`` lists them);
- scikit-learn's bundled ``load_digits()`` (1,797 8×8 scans of handwritten digits).

Tasks (each an image folder ``train/<class>/*.png`` + ``val/<class>/*.png``):
- ``fashion59``: Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), 1,000 train
  images from the train split and 500 val images from the test split;
- ``digits``: all ten digits, 1,000 train / 797 val (cross-domain: the trunk never saw a digit).

The trunk: torchvision's VGG16 trained from scratch on Fashion-MNIST classes 0-4 (t-shirt,
trouser, pullover, dress, coat), disjoint from ``fashion59``'s classes, saved as a
torchvision-format state dict with a 1000-way head, as a user would bring one.
Everything is cached under the work folder and rebuilt only when missing.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "tshirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)  # fmt: skip
TRUNK_CLASSES = (0, 1, 2, 3, 4)
HEAD_CLASSES = (5, 6, 7, 8, 9)
IMAGE_SIZE = 32


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian header, then raw uint8)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not images.exists():
        raise SystemExit(
            f"{images} not found: install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist)"
        )
    return read_idx(images), read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(
        np.int64
    )


def load_digits_u8() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # 0..16 -> 0..255
    return images, d.target.astype(np.int64)


def _pick(labels: np.ndarray, classes: tuple[int, ...], n: int, rng: np.random.Generator):
    """``n`` indices balanced over ``classes`` (seeded)."""
    per = n // len(classes)
    extra = n - per * len(classes)
    out = []
    for j, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        out.append(rng.choice(idx, size=per + (1 if j < extra else 0), replace=False))
    return np.sort(np.concatenate(out))


def _write_folder(root: Path, split: str, images, labels, names) -> None:
    from PIL import Image

    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        d = root / split / names[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.png")


def make_tasks(work: Path) -> dict[str, Path]:
    """Write the two head tasks as image folders (once)."""
    tasks = {"fashion59": work / "fashion59", "digits": work / "digits"}
    rng = np.random.default_rng(0)
    if not (tasks["fashion59"] / "val").exists():
        xtr, ytr = load_fashion("train")
        xte, yte = load_fashion("test")
        tr = _pick(ytr, HEAD_CLASSES, 1000, rng)
        te = _pick(yte, HEAD_CLASSES, 500, rng)
        names = {c: FASHION_CLASSES[c] for c in HEAD_CLASSES}
        _write_folder(tasks["fashion59"], "train", xtr[tr], ytr[tr], names)
        _write_folder(tasks["fashion59"], "val", xte[te], yte[te], names)
    if not (tasks["digits"] / "val").exists():
        x, y = load_digits_u8()
        perm = rng.permutation(len(y))
        tr, te = perm[:1000], perm[1000:]
        names = {c: f"digit{c}" for c in range(10)}
        _write_folder(tasks["digits"], "train", x[tr], y[tr], names)
        _write_folder(tasks["digits"], "val", x[te], y[te], names)
    return tasks


def _tensors(images: np.ndarray):
    """uint8 grayscale images -> normalised 3×32×32 tensors through tlx's eval transform."""
    import torch
    from PIL import Image

    from exporter.core.preprocess import Preprocessing

    tf = Preprocessing(image_size=IMAGE_SIZE).eval_transform()
    return torch.stack([tf(Image.fromarray(im)) for im in images])


def pretrain_trunk(
    work: Path, *, n_train: int = 10000, epochs: int = 2, lr: float = 1e-4, seed: int = 0
) -> Path:
    """Train VGG16 from scratch on Fashion-MNIST classes 0-4; save a torchvision state dict."""
    import torch
    from torchvision.models import vgg16

    path = work / "trunk_fashion0-4.pth"
    if path.exists():
        return path
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xtr, ytr = load_fashion("train")
    xte, yte = load_fashion("test")
    tr = _pick(ytr, TRUNK_CLASSES, n_train, rng)
    te = _pick(yte, TRUNK_CLASSES, 1000, rng)
    x, y = _tensors(xtr[tr]), torch.from_numpy(ytr[tr])
    xv, yv = _tensors(xte[te]), torch.from_numpy(yte[te])
    model = vgg16(weights=None)  # 1000-way head, as torchvision ships it
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    t0 = time.perf_counter()
    log = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (i // 64) % 20 == 0:
                step = i // 64
                print(f"  trunk epoch {epoch + 1} step {step}: loss {loss.item():.3f}", flush=True)
        model.eval()
        with torch.no_grad():
            acc = float((model(xv).argmax(1) == yv).float().mean())
        log.append({"epoch": epoch + 1, "val_accuracy": acc})
        print(f"  trunk epoch {epoch + 1}: val accuracy {acc:.3f}", flush=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    info = {
        "classes": [FASHION_CLASSES[c] for c in TRUNK_CLASSES],
        "train_images": n_train,
        "epochs": epochs,
        "lr": lr,
        "optimizer": "adamw",
        "seconds": round(time.perf_counter() - t0, 1),
        "history": log,
    }
    (work / "trunk_fashion0-4.json").write_text(json.dumps(info, indent=2))
    return path


if __name__ == "__main__":
    import sys

    work = Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/transfer-bench")
    work.mkdir(parents=True, exist_ok=True)
    print(make_tasks(work))
    print(pretrain_trunk(work))
