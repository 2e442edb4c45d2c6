"""Data sources: synthetic determinism, imagefolder edge cases, cifar10 offline, eval images."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exporter.core.config import DataConfig
from exporter.core.errors import EnvironmentUnavailable, InputFileError, UsageError
from exporter.core.runfolder import open_run
from exporter.data.datasets import build_datasets, load_eval_images
from exporter.data.imagefolder import SkippedImageWarning
from exporter.data.synthetic import NUM_CLASSES, make_synthetic


def test_synthetic_is_deterministic_and_balanced() -> None:
    a, la = make_synthetic(200, seed=3)
    b, lb = make_synthetic(200, seed=3)
    c, _ = make_synthetic(200, seed=4)
    v, _ = make_synthetic(200, seed=3, split="val")
    assert a.dtype == np.uint8 and a.shape == (200, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, v)  # val is an independent stream, not a copy of train
    assert np.bincount(la, minlength=NUM_CLASSES).tolist() == [20] * NUM_CLASSES


def test_synthetic_classes_are_separable_by_a_simple_classifier() -> None:
    # A nearest-class-mean classifier on raw pixels: far above chance means there is signal
    # a network can learn (random labels would give ~10%).
    x, y = make_synthetic(1000, seed=0)
    xv, yv = make_synthetic(300, seed=0, split="val")
    feats = x.reshape(len(x), -1).astype(np.float32)
    means = np.stack([feats[y == c].mean(0) for c in range(NUM_CLASSES)])
    fv = xv.reshape(len(xv), -1).astype(np.float32)
    pred = ((fv[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yv).mean() > 0.5


@pytest.mark.slow  # ~70 s on 2 cores: the demo's epochs of the full 120M-parameter head
def test_synthetic_is_learnable_by_the_vgg_head_on_a_random_trunk() -> None:
    # What `tlx demo` relies on: the standard VGG16 head (dropout, std-0.01 init) trained with
    # `tlx train`'s default optimizer, LR and schedule on cached features of a *random-init*
    # frozen trunk learns the classes at the demo's size (400 images, DemoConfig.epochs
    # epochs of batches of 64) on the model's own head path (avgpool -> flatten ->
    # classifier); chance is 0.10.
    import math

    import torch

    from exporter.core.config import DemoConfig, TrainConfig
    from exporter.core.preprocess import Preprocessing
    from exporter.model.vgg import build_vgg16
    from exporter.train.recipe import phase_lr_factor, plan_phases

    torch.manual_seed(0)
    model = build_vgg16(num_classes=NUM_CLASSES, weights="none")
    tf = Preprocessing(image_size=32).eval_transform()

    def features(n: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        x, y = make_synthetic(n, seed=0, split=split)
        with torch.no_grad():
            f = model.features(torch.stack([tf(Image.fromarray(a)) for a in x]))
        return torch.flatten(model.avgpool(f), 1), torch.from_numpy(y)

    demo = DemoConfig()
    f_train, y_train = features(demo.train_size, "train")
    f_val, y_val = features(demo.val_size, "val")
    defaults = TrainConfig(epochs=demo.epochs)
    bs = defaults.batch_size
    phases = plan_phases(defaults, steps_per_epoch=math.ceil(len(y_train) / bs))
    head = model.classifier
    opt = torch.optim.AdamW(head.parameters(), lr=defaults.lr, weight_decay=defaults.weight_decay)
    head.train()
    step = 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(defaults.epochs):
        perm = torch.randperm(len(y_train), generator=gen)
        for i in range(0, len(y_train), bs):
            idx = perm[i : i + bs]
            for g in opt.param_groups:
                g["lr"] = defaults.lr * phase_lr_factor(step, phases)
            loss = torch.nn.functional.cross_entropy(head(f_train[idx]), y_train[idx])
            assert math.isfinite(loss.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    head.eval()
    with torch.no_grad():
        accuracy = float((head(f_val).argmax(1) == y_val).float().mean())
    assert accuracy >= 0.5, accuracy


def test_build_synthetic_bundle_uses_preprocessing() -> None:
    b = build_datasets(
        DataConfig(source="synthetic", train_size=20, val_size=10, image_size=40, augment=False)
    )
    assert (len(b.train), len(b.val), b.num_classes) == (20, 10, 10)
    x, label = b.train[0]
    assert tuple(x.shape) == (3, 40, 40) and isinstance(label, int)
    assert b.describe()["skipped_count"] == 0


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                arr = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"rgb{i}.png")
    Image.fromarray(np.full((16, 16), 128, np.uint8), mode="L").save(root / "train/cat/gray.png")
    Image.fromarray(np.full((16, 16, 4), 200, np.uint8), mode="RGBA").save(
        root / "train/dog/rgba.png"
    )
    Image.new("P", (16, 16), 3).save(root / "val/cat/palette.png")
    (root / "train/cat/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "train/dog/empty.png").write_bytes(b"")
    (root / "train/dog/notes.txt").write_text("not an image, ignored")
    # A truncated PNG: valid header, data cut off.
    full = root / "val/dog/rgb0.png"
    (root / "val/dog/truncated.png").write_bytes(full.read_bytes()[:60])


def test_imagefolder_converts_modes_and_skips_bad_files(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    cfg = DataConfig(source="imagefolder", data_dir=str(tmp_path), image_size=32, augment=False)
    with pytest.warns(SkippedImageWarning) as rec:
        b = build_datasets(cfg)
    assert b.class_names == ["cat", "dog"]
    skipped = sorted(Path(s["path"]).name for s in b.skipped)
    assert skipped == ["corrupt.jpg", "empty.png", "truncated.png"]
    assert len(rec) == 3 and all(
        Path(s["path"]).name in str(rec[i].message) for i, s in enumerate(b.skipped)
    )
    assert (len(b.train), len(b.val)) == (6, 5)  # 4 rgb + gray + rgba ; 4 rgb + palette
    for ds in (b.train, b.val):
        for i in range(len(ds)):
            x, _ = ds[i]
            assert tuple(x.shape) == (3, 32, 32)
    assert b.describe()["skipped_count"] == 3


def test_imagefolder_finds_nested_images_and_skips_hidden(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    nested = tmp_path / "train/cat/batch2/deeper"
    nested.mkdir(parents=True)
    img = Image.fromarray(np.zeros((12, 12, 3), np.uint8))
    img.save(nested / "deep.JPG")  # upper-case extension, two levels down
    hidden = tmp_path / "train/dog/.thumbs"
    hidden.mkdir()
    img.save(hidden / "thumb.png")
    img.save(tmp_path / "train/dog/._resource.png")
    cfg = DataConfig(source="imagefolder", data_dir=str(tmp_path), image_size=32)
    with pytest.warns(SkippedImageWarning):
        b = build_datasets(cfg)
    names = [p.name for p in b.train.paths]
    assert "deep.JPG" in names and "thumb.png" not in names and "._resource.png" not in names
    assert len(b.train) == 7  # the 6 from _write_folder + the nested one


def test_imagefolder_strict_raises_on_first_bad_file(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    cfg = DataConfig(source="imagefolder", data_dir=str(tmp_path), strict=True)
    with pytest.raises(InputFileError, match=r"unreadable image .*corrupt\.jpg"):
        build_datasets(cfg)


def test_imagefolder_bad_layouts(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs --data-dir"):
        build_datasets(DataConfig(source="imagefolder"))
    with pytest.raises(InputFileError, match="does not exist"):
        build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path / "nope")))
    with pytest.raises(InputFileError, match="no train/ folder"):
        build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path)))
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(UsageError, match="no class folders"):
        build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path)))
    (tmp_path / "train/a").mkdir()
    (tmp_path / "val/b").mkdir()
    with pytest.raises(UsageError, match="same class folders"):
        build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path)))
    (tmp_path / "val/b").rmdir()
    (tmp_path / "val/a").mkdir()
    with pytest.raises(UsageError, match="at least 2 classes"):
        build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path)))
    (tmp_path / "train/b").mkdir()
    (tmp_path / "val/b").mkdir()
    with pytest.raises(UsageError, match="no readable images"):
        build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path)))


def test_decompression_bomb_is_skipped_like_a_corrupt_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_folder(tmp_path)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "val/cat/bomb.png")
    # Lower the limit for the test instead of writing a huge file; the limit stays on.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    cfg = DataConfig(source="imagefolder", data_dir=str(tmp_path), image_size=32)
    with pytest.warns(SkippedImageWarning):
        b = build_datasets(cfg)
    assert "bomb.png" in {Path(s["path"]).name for s in b.skipped}


def _cut_cifar10_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)


def test_cifar10_offline_is_an_environment_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cut_cifar10_network(monkeypatch)
    cfg = DataConfig(source="cifar10", data_dir=str(tmp_path / "c10"))
    with pytest.raises(EnvironmentUnavailable, match="CIFAR-10 is not in") as exc:
        build_datasets(cfg)
    assert exc.value.exit_code == 3


def test_unknown_source_and_bad_sizes() -> None:
    with pytest.raises(UsageError, match="--data 'mnist'"):
        build_datasets(DataConfig(source="mnist"))
    with pytest.raises(UsageError, match="--train-size"):
        build_datasets(DataConfig(source="synthetic", train_size=0))


def test_data_config_from_dict_ignores_extra_keys() -> None:
    cfg = DataConfig.from_dict({"source": "synthetic", "seed": 2, "future_key": 1})
    assert cfg.source == "synthetic" and cfg.seed == 2


def test_load_eval_images_on_conftest_run(shared_run_folder: Path) -> None:
    info = open_run(shared_run_folder)
    x, y = load_eval_images(info, 8, seed=1)
    assert x.dtype == np.float32 and x.shape == (8, 3, 32, 32)
    assert y.dtype == np.int64 and y.shape == (8,)
    x2, y2 = load_eval_images(info, 8, seed=1)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    # Fewer images than asked: all of them; normalised (not raw 0..255 pixels).
    xa, ya = load_eval_images(info, 10_000)
    assert len(xa) == info.data_config["val_size"] and len(ya) == len(xa)
    assert -3.0 < float(xa.min()) < 0.0 < float(xa.max()) < 3.0
    xt, _ = load_eval_images(info, 8, split="train", seed=1)
    assert not np.array_equal(xt, x)
    with pytest.raises(UsageError, match="split"):
        load_eval_images(info, 8, split="test")


def test_limits_take_a_seeded_subset_of_each_split() -> None:
    full = build_datasets(DataConfig(source="synthetic", train_size=30, val_size=20, image_size=32))
    cfg = DataConfig(
        source="synthetic", train_size=30, val_size=20, image_size=32, limit_train=7, limit_val=5
    )
    a, b = build_datasets(cfg), build_datasets(cfg)
    assert (len(a.train), len(a.val)) == (7, 5)
    assert a.describe()["train_size"] == 7 and a.describe()["val_size"] == 5
    assert a.train.indices.tolist() == b.train.indices.tolist()  # same seed, same images
    assert len(set(a.train.indices.tolist())) == 7
    a.val.transform = full.val.transform = None  # raw pixels: compare images, not tensors
    img, label = a.val[2]
    ref_img, ref_label = full.val[int(a.val.indices[2])]
    assert label == ref_label and np.array_equal(np.asarray(img), np.asarray(ref_img))
    other = build_datasets(DataConfig(**{**cfg.__dict__, "seed": 1}))
    assert other.train.indices.tolist() != a.train.indices.tolist()
    # A limit at least the split's size is the whole split.
    whole = build_datasets(DataConfig(**{**cfg.__dict__, "limit_train": 30}))
    assert len(whole.train) == 30
    with pytest.raises(UsageError, match="--limit-val"):
        build_datasets(DataConfig(**{**cfg.__dict__, "limit_val": 0}))


def test_cifar10_loads_from_disk_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_fake_cifar10
) -> None:
    import torchvision.datasets.cifar as cifar

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("CIFAR-10 on disk must not be downloaded")

    monkeypatch.setattr(cifar, "download_and_extract_archive", no_network)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # fake files, real loader
    folder = write_fake_cifar10(tmp_path / "c10")
    # The parent folder (torchvision's root) and the extracted folder itself both work.
    for data_dir in (folder.parent, folder):
        cfg = DataConfig(source="cifar10", data_dir=str(data_dir), image_size=32, limit_train=7)
        b = build_datasets(cfg)
        assert b.class_names[0] == "airplane" and b.num_classes == 10
        assert (len(b.train), len(b.val)) == (7, 4)
        x, y = b.val[0]
        assert tuple(x.shape) == (3, 32, 32) and 0 <= y < 10


def test_cifar10_corrupt_on_disk_says_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_fake_cifar10
) -> None:
    _cut_cifar10_network(monkeypatch)
    folder = write_fake_cifar10(tmp_path / "c10")  # real checksums: these files fail them
    with pytest.raises(EnvironmentUnavailable, match="incomplete or corrupt") as exc:
        build_datasets(DataConfig(source="cifar10", data_dir=str(folder.parent)))
    assert exc.value.exit_code == 3 and "cifar-10-batches-py" in str(exc.value)


def test_load_eval_images_uses_the_runs_limited_split(run_folder: Path) -> None:
    import json

    record = json.loads((run_folder / "train.json").read_text())
    record["config"]["data"]["limit_val"] = 5
    (run_folder / "train.json").write_text(json.dumps(record))
    x, y = load_eval_images(open_run(run_folder), 100)
    assert x.shape == (5, 3, 32, 32)  # all of the limited split, not the 32 images on disk
    bundle = build_datasets(DataConfig.from_dict(record["config"]["data"]))
    expected = np.stack([bundle.val[i][0].numpy() for i in range(5)])
    np.testing.assert_array_equal(x, expected)
    assert y.tolist() == [bundle.val[i][1] for i in range(5)]


@pytest.mark.parametrize(
    ("key", "value"), [("image_size", 5), ("source", "mnist"), ("train_size", "many")]
)
def test_a_hand_edited_data_record_names_train_json(
    tmp_path: Path, make_run_folder, key: str, value: object
) -> None:
    import json

    from exporter.core.errors import InputFileError
    from exporter.core.runfolder import open_run
    from exporter.data.datasets import load_eval_images

    run = make_run_folder(tmp_path / "run")
    record = json.loads((run / "train.json").read_text())
    record["config"]["data"][key] = value
    (run / "train.json").write_text(json.dumps(record))
    with pytest.raises(InputFileError, match=r"train\.json: bad config\.data"):
        load_eval_images(open_run(run), 4)
