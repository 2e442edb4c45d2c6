"""Slow smoke test of real transfer: a trunk pretrained here on some digit classes must help
``tlx train`` learn the other classes (scikit-learn's bundled 8×8 digit scans, offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # a dev dependency; the images ship in its wheel

    d = load_digits()
    return np.rint(d.images * (255 / 16)).astype(np.uint8), d.target


def _pretrain_trunk(images: np.ndarray, labels: np.ndarray, dest: Path) -> None:
    """VGG16 from scratch on digits 0-4 (a 1000-way head, saved as torchvision saves it)."""
    import torch
    from PIL import Image
    from torchvision.models import vgg16

    from exporter.core.preprocess import Preprocessing

    torch.manual_seed(0)
    tf = Preprocessing(image_size=32).eval_transform()
    x = torch.stack([tf(Image.fromarray(a)) for a in images])
    y = torch.from_numpy(labels)
    model = vgg16(weights=None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(6):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 32):
            idx = perm[i : i + 32]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(model.state_dict(), dest)


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray, n_train: int) -> None:
    from PIL import Image

    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        split = "train" if i < n_train else "val"
        d = root / split / f"digit{y}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")


def test_pretrained_trunk_beats_random_trunk(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from exporter.cli import app

    images, labels = _digits()
    rng = np.random.default_rng(0)
    trunk_idx = rng.permutation(np.flatnonzero(labels < 5))
    head_idx = rng.permutation(np.flatnonzero(labels >= 5))
    trunk = tmp_path / "trunk.pth"
    _pretrain_trunk(images[trunk_idx], labels[trunk_idx], trunk)
    _write_folder(tmp_path / "head", images[head_idx], labels[head_idx], n_train=600)

    def train(weights: str, out: str) -> float:
        import json

        args = ["train", "--data", "imagefolder", "--data-dir", str(tmp_path / "head"),
                "--image-size", "32", "--epochs", "3", "--weights", weights,
                "--out", str(tmp_path / out), "-q"]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        record = json.loads((tmp_path / out / "train.json").read_text())
        assert record["recipe"]["augment"] is False  # 32 px: auto turns augmentation off
        return float(record["best"]["val_accuracy"])

    pretrained = train(str(trunk), "pre")
    random_trunk = train("none", "rand")
    assert pretrained >= random_trunk + 0.1, (pretrained, random_trunk)
