"""The bad-input matrix: every case gets its documented exit code and a one-line message
naming the file or option, never a traceback.

Cases cover CLI options, run folders, artifacts, images and folders, and the environment.
They run in-process through Typer's CliRunner (stderr captured separately), on small run
folders made here; nothing in this module trains or exports VGG16 for real.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.fsio import sha256_file

RUN = "{run}"  # placeholder replaced by the case's run folder


@dataclass(frozen=True)
class Case:
    """One hostile input: the argv (with {run}/{tmp}), the exit code and a message fragment."""

    id: str
    argv: tuple[str, ...]
    code: int
    says: str  # the message must name this (option, file or fix)
    setup: Callable[[Path, Path], None] | None = None  # (run_dir, tmp) -> None


def _nothing(run: Path, tmp: Path) -> None:
    pass


def _empty_dir(run: Path, tmp: Path) -> None:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)


def _garbage_train_json(run: Path, tmp: Path) -> None:
    (run / "train.json").write_text("{not json")


def _no_weights(run: Path, tmp: Path) -> None:
    (run / "model.safetensors").unlink()


def _private(path: Path) -> Path:
    """Break the hard link to the pristine run before a case mutates ``path`` in place."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return path


def _wrong_shape_weights(run: Path, tmp: Path) -> None:
    # A checkpoint for 7 classes in a run whose train.json says 10: the run's own weights
    # with a 7-class head (building a 7-class VGG16 would initialise 134 M parameters).
    from safetensors.torch import load_file, save_file

    state = load_file(str(run / "model.safetensors"))
    for name in ("classifier.6.weight", "classifier.6.bias"):
        state[name] = state[name][:7].contiguous()
    (run / "model.safetensors").unlink()
    save_file(state, str(run / "model.safetensors"))


def _wrong_dtype_weights(run: Path, tmp: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(run / "model.safetensors"))
    (run / "model.safetensors").unlink()
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(run / "model.safetensors"))


def _truncated_weights(run: Path, tmp: Path) -> None:
    p = _private(run / "model.safetensors")
    with open(p, "r+b") as fh:
        fh.truncate(1000)


def _manifest_with(run: Path, name: str, payload: bytes, *, fmt: str, lie: bool) -> None:
    """Put ``payload`` at RUN/name and list it in a manifest (with a wrong hash if ``lie``)."""
    (run / name).write_bytes(payload)
    digest = "0" * 64 if lie else sha256_file(run / name)
    manifest = {
        "schema_version": 1,
        "source": {
            "file": "model.safetensors",
            "sha256": sha256_file(run / "model.safetensors"),
            "bytes": (run / "model.safetensors").stat().st_size,
        },
        "metadata": {},
        "artifacts": {
            name: {
                "format": fmt,
                "precision": "fp32",
                "files": [{"path": name, "sha256": digest, "bytes": len(payload)}],
            }
        },
    }
    (run / "manifest.json").write_text(json.dumps(manifest))


def _tampered_onnx(run: Path, tmp: Path) -> None:
    _manifest_with(run, "model.onnx", b"\x08\x07garbage", fmt="onnx", lie=True)


def _tampered_ts(run: Path, tmp: Path) -> None:
    _manifest_with(run, "model.ts", b"PK\x03\x04 not a zip", fmt="torchscript", lie=True)


def _garbage_onnx_hashed(run: Path, tmp: Path) -> None:
    # Hash matches, but the bytes are no ONNX model: refused before ORT sees it.
    _manifest_with(run, "model.onnx", b"\x00\x01\x02garbage" * 10, fmt="onnx", lie=False)


def _truncated_onnx_hashed(run: Path, tmp: Path) -> None:
    _manifest_with(run, "model.onnx", _tiny_onnx_bytes()[:60], fmt="onnx", lie=False)


def _wrong_input_onnx(run: Path, tmp: Path) -> None:
    _manifest_with(run, "model.onnx", _tiny_onnx_bytes(input_name="x", hw=8), fmt="onnx", lie=False)


def _traversal_onnx(run: Path, tmp: Path) -> None:
    _manifest_with(
        run, "model.onnx", _tiny_onnx_bytes(external="../../etc/passwd"), fmt="onnx", lie=False
    )


def _garbage_manifest(run: Path, tmp: Path) -> None:
    (run / "manifest.json").write_text("[1, 2")


def _manifest_escapes_run(run: Path, tmp: Path) -> None:
    _manifest_with(run, "model.onnx", b"x", fmt="onnx", lie=False)
    m = json.loads((run / "manifest.json").read_text())
    m["artifacts"]["model.onnx"]["files"][0]["path"] = "../outside.onnx"
    (run / "manifest.json").write_text(json.dumps(m))


def _tiny_onnx_bytes(
    *, input_name: str = "input", hw: int = 32, external: str | None = None
) -> bytes:
    """A valid 2-node ONNX classifier (GlobalAveragePool → Flatten → Gemm) built by hand."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 10], np.ones(30, np.float32).tolist())
    if external is not None:
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 10])
        w.data_location = TensorProto.EXTERNAL
        entry = w.external_data.add()
        entry.key, entry.value = "location", external
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [input_name], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what ONNX Runtime 1.2x/1.3x loads
    return model.SerializeToString()


def _imagefolder(tmp: Path, files: dict[str, bytes | Image.Image]) -> Path:
    root = tmp / "images"
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            content.save(p)
    return root


def _all_corrupt_images(run: Path, tmp: Path) -> None:
    _imagefolder(
        tmp,
        {
            f"{split}/{c}/{i}.png": b"\x89PNG broken"
            for split in ("train", "val")
            for c in ("a", "b")
            for i in range(2)
        },
    )


def _only_train_split(run: Path, tmp: Path) -> None:
    img = Image.new("RGB", (8, 8), "red")
    _imagefolder(tmp, {"train/a/0.png": img, "train/b/0.png": img})


def _mismatched_classes(run: Path, tmp: Path) -> None:
    img = Image.new("RGB", (8, 8), "red")
    _imagefolder(
        tmp, {"train/a/0.png": img, "train/b/0.png": img, "val/a/0.png": img, "val/c/0.png": img}
    )


def _empty_image_folder(run: Path, tmp: Path) -> None:
    (tmp / "images" / "train").mkdir(parents=True)
    (tmp / "images" / "val").mkdir(parents=True)


def _evil_pickle(run: Path, tmp: Path) -> None:
    class Canary:
        def __reduce__(self) -> tuple:
            return (open, (str(tmp / "canary"), "w"))

    torch.save({"features.0.weight": Canary()}, tmp / "evil.pth")


def _weights_not_vgg(run: Path, tmp: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp / "resnet.pth")


def _one_class(run: Path, tmp: Path) -> None:
    img = Image.new("RGB", (8, 8), "red")
    _imagefolder(tmp, {"train/cat/0.png": img, "val/cat/0.png": img})


def _class_without_training_images(run: Path, tmp: Path) -> None:
    img = Image.new("RGB", (8, 8), "red")
    _imagefolder(tmp, {"train/cat/0.png": img, "val/cat/0.png": img, "val/dog/0.png": img})
    (tmp / "images" / "train" / "dog").mkdir()


def _classes_differing_in_case(run: Path, tmp: Path) -> None:
    img = Image.new("RGB", (8, 8), "red")
    _imagefolder(tmp, {f"{s}/{c}/0.png": img for s in ("train", "val") for c in ("Dog", "dog")})


def _val_unreadable(run: Path, tmp: Path) -> None:
    img = Image.new("RGB", (8, 8), "red")
    files: dict[str, bytes | Image.Image] = {"train/a/0.png": img, "train/b/0.png": img}
    files |= {"val/a/0.png": b"\x89PNG broken", "val/b/0.png": b""}
    _imagefolder(tmp, files)


def _run_image_size_8(run: Path, tmp: Path) -> None:
    record = json.loads((run / "train.json").read_text())
    record["preprocessing"]["image_size"] = record["preprocessing"]["resize_size"] = 8
    (run / "train.json").write_text(json.dumps(record))


_LOCK_FDS: list[int] = []  # held by a case's setup until the case ends


def _new_run_locked_by_another_train(run: Path, tmp: Path) -> None:
    (run / "sub").mkdir()
    _run_locked_by_another_command(run / "sub", tmp)


def _run_locked_by_another_command(run: Path, tmp: Path) -> None:
    import fcntl

    from exporter.core.runlock import LOCK_NAME

    # A second open file description conflicts like another process's lock would.
    fd = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"pid 4242: export (tlx export run --format pt2)\n")
    _LOCK_FDS.append(fd)


def _predict_images(run: Path, tmp: Path) -> None:
    _imagefolder(tmp, {"good.png": Image.new("RGB", (40, 40), "red"), "bad.png": b"\x89PNG no"})


def _tiny_model_and_images(run: Path, tmp: Path) -> None:
    """A valid hashed ONNX classifier with its signature in the manifest, and two images."""
    _manifest_with(run, "model.onnx", _tiny_onnx_bytes(), fmt="onnx", lie=False)
    m = json.loads((run / "manifest.json").read_text())
    m["artifacts"]["model.onnx"]["inputs"] = [
        {"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"}
    ]
    m["artifacts"]["model.onnx"]["outputs"] = [
        {"name": "logits", "shape": ["batch", 10], "dtype": "float32"}
    ]
    (run / "manifest.json").write_text(json.dumps(m))
    _predict_images(run, tmp)


def _tampered_onnx_and_images(run: Path, tmp: Path) -> None:
    _tampered_onnx(run, tmp)
    _predict_images(run, tmp)


def _odd(tmp: Path) -> Path:
    (tmp / "odd").mkdir(exist_ok=True)
    return tmp / "odd"


def _model_and_wide_png(run: Path, tmp: Path) -> None:
    _tiny_model_and_images(run, tmp)
    Image.new("L", (1_000_000, 1), 9).save(_odd(tmp) / "wide.png")  # 3 kB; once 5.9 GB peak


def _model_and_fifo(run: Path, tmp: Path) -> None:
    _tiny_model_and_images(run, tmp)
    os.mkfifo(_odd(tmp) / "x.png")


def _model_and_nan_tiff(run: Path, tmp: Path) -> None:
    _tiny_model_and_images(run, tmp)
    Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F").save(_odd(tmp) / "nan.tif")


def _model_and_symlink_loops(run: Path, tmp: Path) -> None:
    _tiny_model_and_images(run, tmp)
    d = tmp / "images"  # good.png and bad.png, plus two links back to itself
    os.symlink(".", d / "s1")
    os.symlink(".", d / "s2")


_SOCKETS: list = []  # held by a case's setup until the case ends; "{port}" is the last one's


def _port_held_by_another_server(run: Path, tmp: Path) -> None:
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(8)  # accepts connections, never answers: what a foreign server looks like
    _SOCKETS.append(held)


def _link_to_canary(name: str) -> Callable[[Path, Path], None]:
    """A dangling link in the run; following it would create {tmp}/canary."""

    def setup(run: Path, tmp: Path) -> None:
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(tmp / "canary")

    return setup


def _triton_dir_is_a_link(run: Path, tmp: Path) -> None:
    _tiny_model_and_images(run, tmp)
    _link_to_canary("triton")(run, tmp)


def _triton_labels_reordered(run: Path, tmp: Path) -> None:
    """A Triton repository whose labels.txt (hashed anew in the manifest) swaps two classes."""
    from exporter.core.manifest import ArtifactEntry, FileRecord, load_manifest, save_manifest

    _tiny_model_and_images(run, tmp)
    classes = json.loads((run / "train.json").read_text())["dataset"]["class_names"]
    (run / "triton" / "m").mkdir(parents=True)
    (run / "triton" / "m" / "labels.txt").write_text("\n".join([classes[1], classes[0]]) + "\n")
    manifest = load_manifest(run)
    manifest.artifacts["triton/m"] = ArtifactEntry(
        name="triton/m",
        format="triton",
        files=[FileRecord.of(run, "triton/m/labels.txt")],
        precision="fp32",
    )
    save_manifest(run, manifest)


IMG = "{tmp}/images"
SYN = ("train", "--data", "synthetic", "--weights", "none", "--out", "{tmp}/out")
CASES = [
    # --- CLI options (train cases that pass the memory check use 32 px: any machine has it)
    Case("train-batch-0", ("train", "--data", "synthetic", "--batch-size", "0"), 2, "batch-size"),
    Case(
        "train-batch-neg", ("train", "--data", "synthetic", "--batch-size", "-1"), 2, "batch-size"
    ),
    Case("train-epochs-0", ("train", "--data", "synthetic", "--epochs", "0"), 2, "epochs"),
    Case("train-lr-neg", ("train", "--data", "synthetic", "--lr", "-1"), 2, "lr"),
    Case("train-unknown-data", ("train", "--data", "mnist"), 2, "data"),
    Case(
        "train-limit-train-0",
        ("train", "--data", "synthetic", "--limit-train", "0"),
        2,
        "limit-train",
    ),
    Case("train-unknown-device", ("train", "--data", "synthetic", "--device", "tpu"), 2, "device"),
    Case(
        "train-image-size-0", ("train", "--data", "synthetic", "--image-size", "0"), 2, "image-size"
    ),
    Case(
        "train-unfreeze-from-bad",
        (
            "train",
            "--data",
            "synthetic",
            "--weights",
            "none",
            "--unfreeze-at",
            "1",
            "--unfreeze-from",
            "features.99",
        ),
        2,
        "unfreeze-from",
    ),
    Case("export-unknown-format", ("export", RUN, "--format", "tflite"), 2, "format"),
    Case("export-opset-too-low", ("export", RUN, "--format", "onnx", "--opset", "5"), 2, "opset"),
    Case(
        "export-batch-0", ("export", RUN, "--format", "onnx", "--batch-size", "0"), 2, "batch-size"
    ),
    Case("export-missing-arg", ("export",), 2, "run"),
    Case("export-extra-arg", ("export", RUN, "extra"), 2, "extra"),
    Case("verify-unknown-runtime", ("verify", RUN, "--runtimes", "tensorflow"), 2, "tensorflow"),
    Case("verify-unknown-device", ("verify", RUN, "--device", "tpu"), 2, "device"),
    Case("verify-negative-samples", ("verify", RUN, "--samples", "-5"), 2, "samples"),
    Case("bench-batch-0", ("bench", RUN, "--batch-sizes", "0"), 2, "batch-sizes"),
    Case("bench-batch-neg", ("bench", RUN, "--batch-sizes", "-1"), 2, "batch-sizes"),
    Case("bench-batch-huge", ("bench", RUN, "--batch-sizes", "100000000"), 2, "batch-sizes"),
    Case("bench-batch-text", ("bench", RUN, "--batch-sizes", "one,two"), 2, "batch-sizes"),
    Case("bench-unknown-runtime", ("bench", RUN, "--runtimes", "openvino-x"), 2, "openvino-x"),
    Case("unknown-command", ("deploy", RUN), 2, "deploy"),
    # --- run folders -------------------------------------------------------------------
    Case(
        "export-missing-run",
        ("export", "{tmp}/nope", "--format", "onnx"),
        2,
        "nope",
    ),
    Case("export-empty-run", ("export", RUN, "--format", "onnx"), 2, "train.json", _empty_dir),
    Case(
        "export-garbage-train-json",
        ("export", RUN, "--format", "onnx"),
        2,
        "train.json",
        _garbage_train_json,
    ),
    Case(
        "export-no-weights",
        ("export", RUN, "--format", "onnx"),
        2,
        "model.safetensors",
        _no_weights,
    ),
    Case(
        "export-wrong-shape-weights",
        ("export", RUN, "--format", "onnx"),
        2,
        "shape",
        _wrong_shape_weights,
    ),
    Case(
        "export-wrong-dtype-weights",
        ("export", RUN, "--format", "onnx"),
        2,
        "dtype",
        _wrong_dtype_weights,
    ),
    Case(
        "export-truncated-weights",
        ("export", RUN, "--format", "onnx"),
        2,
        "model.safetensors",
        _truncated_weights,
    ),
    Case("verify-no-manifest", ("verify", RUN), 2, "manifest.json", _nothing),
    Case("verify-garbage-manifest", ("verify", RUN), 2, "manifest.json", _garbage_manifest),
    Case("verify-manifest-escapes-run", ("verify", RUN), 2, "outside", _manifest_escapes_run),
    Case("bench-run-is-a-file", ("bench", "{tmp}/file.txt"), 2, "file.txt"),
    # --- artifacts ---------------------------------------------------------------------
    Case(
        "verify-tampered-onnx",
        ("verify", RUN, "--runtimes", "ort-cpu"),
        2,
        "model.onnx",
        _tampered_onnx,
    ),
    Case(
        "verify-tampered-ts",
        ("verify", RUN, "--runtimes", "torchscript"),
        2,
        "model.ts",
        _tampered_ts,
    ),
    Case(
        "bench-tampered-onnx",
        ("bench", RUN, "--runtimes", "ort-cpu"),
        2,
        "model.onnx",
        _tampered_onnx,
    ),
    Case("inspect-tampered-onnx", ("inspect", "{run}/model.onnx"), 2, "model.onnx", _tampered_onnx),
    Case(
        "verify-garbage-onnx",
        ("verify", RUN, "--runtimes", "ort-cpu"),
        2,
        "model.onnx",
        _garbage_onnx_hashed,
    ),
    Case(
        "verify-truncated-onnx",
        ("verify", RUN, "--runtimes", "ort-cpu"),
        2,
        "model.onnx",
        _truncated_onnx_hashed,
    ),
    Case(
        "verify-onnx-path-traversal",
        ("verify", RUN, "--runtimes", "ort-cpu"),
        2,
        "etc/passwd",
        _traversal_onnx,
    ),
    Case(
        "verify-wrong-input-onnx",
        ("verify", RUN, "--runtimes", "ort-cpu", "--samples", "0"),
        1,
        "model.onnx",
        _wrong_input_onnx,
    ),
    # --- images and folders --------------------------------------------------------------
    Case(
        "train-imagefolder-no-dir",
        ("train", "--data", "imagefolder", "--weights", "none"),
        2,
        "data-dir",
    ),
    Case(
        "train-imagefolder-missing",
        ("train", "--data", "imagefolder", "--data-dir", "{tmp}/nowhere", "--weights", "none"),
        2,
        "nowhere",
    ),
    Case(
        "train-imagefolder-empty",
        ("train", "--data", "imagefolder", "--data-dir", IMG, "--weights", "none"),
        2,
        "images",
        _empty_image_folder,
    ),
    Case(
        "train-imagefolder-no-val",
        ("train", "--data", "imagefolder", "--data-dir", IMG, "--weights", "none"),
        2,
        "val",
        _only_train_split,
    ),
    Case(
        "train-imagefolder-class-mismatch",
        ("train", "--data", "imagefolder", "--data-dir", IMG, "--weights", "none"),
        2,
        "class",
        _mismatched_classes,
    ),
    Case(
        "train-imagefolder-all-corrupt",
        (
            "train",
            "--data",
            "imagefolder",
            "--data-dir",
            IMG,
            "--weights",
            "none",
            "--out",
            "{tmp}/out",
            "--image-size",
            "32",
        ),
        2,
        "images",
        _all_corrupt_images,
    ),
    Case(
        "train-weights-missing",
        ("train", "--data", "synthetic", "--weights", "{tmp}/w.pth", "--image-size", "32"),
        2,
        "w.pth",
    ),
    Case(
        "train-weights-code-pickle",
        (
            "train",
            "--data",
            "synthetic",
            "--weights",
            "{tmp}/evil.pth",
            "--out",
            "{tmp}/out",
            "--image-size",
            "32",
        ),
        2,
        "evil.pth",
        _evil_pickle,
    ),
    Case(
        "train-weights-not-vgg",
        (
            "train",
            "--data",
            "synthetic",
            "--weights",
            "{tmp}/resnet.pth",
            "--out",
            "{tmp}/out",
            "--image-size",
            "32",
        ),
        2,
        "resnet.pth",
        _weights_not_vgg,
    ),
    # --- environment ---------------------------------------------------------------------
    Case(
        "train-cuda-on-cpu",
        (
            "train",
            "--data",
            "synthetic",
            "--weights",
            "none",
            "--device",
            "cuda",
            "--out",
            "{tmp}/out",
        ),
        3,
        "cuda",
    ),
    Case(
        "verify-ort-cuda-on-cpu",
        ("verify", RUN, "--runtimes", "ort-cuda"),
        3,
        "cuda",
        _garbage_onnx_hashed,
    ),
    Case("bench-cuda-on-cpu", ("bench", RUN, "--device", "cuda", "--runtimes", "eager"), 3, "cuda"),
    # --- resources and concurrency (issue 16) ----------------------------------------------
    Case("train-image-size-8", (*SYN, "--image-size", "8"), 2, "at least 32 px"),
    Case("train-image-size-huge", (*SYN, "--image-size", "100000"), 2, "largest supported"),
    Case(
        "train-batch-beyond-memory",
        (*SYN, "--image-size", "1024", "--batch-size", "8192"),
        3,
        "memory",
    ),
    Case(
        "export-run-image-size-8",
        ("export", RUN, "--format", "onnx"),
        2,
        "image size (train.json",
        _run_image_size_8,
    ),
    Case(
        "bench-batch-beyond-memory",
        ("bench", RUN, "--runtimes", "eager", "--batch-sizes", "65536"),
        3,
        "memory",
    ),
    Case(
        "export-run-busy-no-wait",
        ("export", RUN, "--format", "onnx", "--no-wait"),
        3,
        "pid 4242",
        _run_locked_by_another_command,
    ),
    Case(
        "train-run-busy-no-wait",
        (*SYN[:-1], "{run}/sub", "--image-size", "32", "--no-wait"),
        3,
        "pid 4242",
        _new_run_locked_by_another_train,
    ),
    # --- degenerate data ---------------------------------------------------------------------
    Case(
        "train-imagefolder-one-class",
        ("train", "--data", "imagefolder", "--data-dir", IMG, "--weights", "none"),
        2,
        "at least 2 classes",
        _one_class,
    ),
    Case(
        "train-imagefolder-class-without-images",
        (
            "train",
            "--data",
            "imagefolder",
            "--data-dir",
            IMG,
            "--weights",
            "none",
            "--image-size",
            "32",
        ),
        2,
        "train/dog",
        _class_without_training_images,
    ),
    Case(
        "train-imagefolder-classes-differ-in-case",
        ("train", "--data", "imagefolder", "--data-dir", IMG, "--weights", "none"),
        2,
        "differ only in case",
        _classes_differing_in_case,
    ),
    Case(
        "train-imagefolder-val-unreadable",
        (
            "train",
            "--data",
            "imagefolder",
            "--data-dir",
            IMG,
            "--weights",
            "none",
            "--image-size",
            "32",
        ),
        2,
        "val has no readable images",
        _val_unreadable,
    ),
    # --- predict and the Triton export ---------------------------------------------------
    Case("predict-no-manifest", ("predict", RUN, IMG), 2, "manifest.json", _predict_images),
    Case("predict-nothing-matched", ("predict", RUN, "{tmp}/nothing/*.png"), 2, "nothing"),
    Case("predict-missing-image", ("predict", RUN, "{tmp}/gone.jpg"), 2, "gone.jpg"),
    Case("predict-one-corrupt-image", ("predict", RUN, IMG), 2, "bad.png", _tiny_model_and_images),
    Case(
        "predict-hostile-variant",
        ("predict", RUN, IMG, "--variant", "../../etc/passwd"),
        2,
        "--variant",
        _tiny_model_and_images,
    ),
    Case(
        "predict-hostile-runtime",
        ("predict", RUN, IMG, "--runtime", "x;rm -rf /"),
        2,
        "x;rm -rf /",
        _tiny_model_and_images,
    ),
    Case("predict-top-k-0", ("predict", RUN, IMG, "--top-k", "0"), 2, "top-k", _predict_images),
    Case(
        "predict-tampered-onnx",
        ("predict", RUN, IMG, "--variant", "model.onnx"),
        2,
        "model.onnx",
        _tampered_onnx_and_images,
    ),
    Case(
        "predict-ort-cuda-on-cpu",
        ("predict", RUN, IMG, "--runtime", "ort-cuda", "--device", "cuda"),
        3,
        "cuda",
        _tiny_model_and_images,
    ),
    # --- inputs that hung or exploded (issue 24) --------------------------------------------
    Case(
        "predict-extreme-aspect-png",
        ("predict", RUN, "{tmp}/odd/wide.png"),
        2,
        "wide.png: 1000000x1 px: the aspect ratio is above 100:1",
        _model_and_wide_png,
    ),
    Case(
        "predict-fifo", ("predict", RUN, "{tmp}/odd/x.png"), 2, "x.png: is a FIFO", _model_and_fifo
    ),
    Case(
        "predict-nan-float-tiff",
        ("predict", RUN, "{tmp}/odd/nan.tif"),
        2,
        "nan.tif: 64 pixel values are NaN or Inf",
        _model_and_nan_tiff,
    ),
    Case(
        "predict-glob-through-symlink-loops",
        ("predict", RUN, "{tmp}/images/**/*.png"),
        2,
        "bad.png",
        _model_and_symlink_loops,
    ),
    Case("predict-empty-argument", ("predict", RUN, ""), 2, "'': not an image path"),
    Case(
        "train-synthetic-fewer-images-than-classes",
        (*SYN, "--train-size", "1"),
        2,
        "--train-size 1",
    ),
    Case(
        "train-rdzv-port-held-by-another-server",
        (*SYN, "--image-size", "32", "--nproc", "2", "--rdzv-endpoint", "127.0.0.1:{port}"),
        3,
        "another program holds that port",
        _port_held_by_another_server,
    ),
    Case("export-triton-no-artifact", ("export", RUN, "--format", "triton"), 2, "--format onnx"),
    Case("export-kserve-no-storage-uri", ("export", RUN, "--format", "kserve"), 2, "--storage-uri"),
    Case(
        "export-kserve-bad-storage-uri",
        ("export", RUN, "--format", "kserve", "--storage-uri", "ftp://host/triton"),
        2,
        "--storage-uri",
    ),
    Case(
        "export-triton-hostile-variant",
        ("export", RUN, "--format", "triton", "--variant", "$(reboot)"),
        2,
        "--variant",
        _tiny_model_and_images,
    ),
    Case(
        "export-triton-bad-model-name",
        ("export", RUN, "--format", "triton", "--model-name", "../up"),
        2,
        "--model-name",
    ),
    # --- links inside the run folder: nothing outside it is written or deleted
    Case(
        "export-lock-is-a-link",
        ("export", RUN, "--format", "onnx"),
        2,
        ".tlx.lock",
        _link_to_canary(".tlx.lock"),
    ),
    Case(
        "export-report-is-a-link",
        ("export", RUN, "--format", "onnx"),
        2,
        "export.json",
        _link_to_canary("export.json"),
    ),
    Case(
        "export-triton-dir-is-a-link-force",
        ("export", RUN, "--format", "triton", "--force"),
        2,
        "triton",
        _triton_dir_is_a_link,
    ),
    Case(
        "train-resume-checkpoint-is-a-link",
        ("train", "--resume", RUN),
        2,
        "checkpoint is a symbolic link",
        _link_to_canary("checkpoint"),
    ),
    Case(
        "verify-triton-labels-reordered",
        ("verify", RUN, "--runtimes", "ort-cpu"),
        2,
        "labels.txt",
        _triton_labels_reordered,
    ),
    Case(
        "export-triton-tampered-onnx",
        ("export", RUN, "--format", "triton"),
        2,
        "model.onnx",
        _tampered_onnx,
    ),
]


def _link_weights_copy_rest(src: str, dst: str) -> None:
    if src.endswith(".safetensors"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def pristine_run(module_tmp: Path, make_run_folder) -> Path:
    return make_run_folder(module_tmp / "run")


# The "-on-cpu" cases ask for CUDA to see it refused: only they need a CPU-only host.
_CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without CUDA")


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=_CPU_ONLY if c.id.endswith("-on-cpu") else ()) for c in CASES],
)
def test_bad_input(case: Case, pristine_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Hard links: a case costs no 537 MB copy; cases that mutate weights unlink first.
    shutil.copytree(pristine_run, run, copy_function=_link_weights_copy_rest)
    (tmp_path / "file.txt").write_text("not a run")
    if case.setup is not None:
        case.setup(run, tmp_path)
    port = str(_SOCKETS[-1].getsockname()[1]) if _SOCKETS else "0"
    argv = [
        a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)).replace("{port}", port)
        for a in case.argv
    ]
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        while _LOCK_FDS:
            os.close(_LOCK_FDS.pop())
        while _SOCKETS:
            _SOCKETS.pop().close()
    stderr = result.stderr
    assert result.exit_code == case.code, (result.exit_code, stderr, result.stdout[-500:])
    assert "Traceback" not in stderr and "Traceback" not in result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert case.says.lower() in stderr.lower(), stderr
    if case.code == 1:  # a gate verdict: one FAIL line per failing candidate, naming it
        assert any(ln.startswith("FAIL") and case.says in ln for ln in stderr.splitlines())
    else:
        errors = [ln for ln in stderr.splitlines() if ln.lower().startswith("error")]
        assert len(errors) == 1, stderr  # exactly one error line
    assert not (tmp_path / "canary").exists()
    assert not (tmp_path / "out").exists(), "a failed train left a run folder behind"


def test_disk_full_is_exit_3_and_keeps_the_previous_file(
    pristine_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails for space: exit 3 with needed vs free bytes, the old file intact."""
    import errno
    from types import SimpleNamespace

    from exporter.core import fsio
    from exporter.core.manifest import ArtifactEntry, FileRecord
    from exporter.export.common import ExportContext
    from exporter.export.export import EXPORTERS

    run = tmp_path / "run"
    shutil.copytree(pristine_run, run, copy_function=_link_weights_copy_rest)
    before = (run / "train.json").read_bytes()

    def full_disk(path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    def small_onnx(ctx: ExportContext, say: object) -> SimpleNamespace:
        """Stands in for the ONNX export (seconds of tracing and checking): only the manifest
        write after it is under test here."""
        (ctx.run_dir / "model.onnx").write_bytes(b"onnx")
        entry = ArtifactEntry("model.onnx", "onnx", [FileRecord.of(ctx.run_dir, "model.onnx")])
        return SimpleNamespace(name="model.onnx", entry=entry)

    monkeypatch.setattr(fsio, "_write_file", full_disk)
    monkeypatch.setitem(EXPORTERS, "onnx", small_onnx)
    # The manifest is the first plain write of `tlx export` (an exporter writes its own file).
    result = CliRunner().invoke(app, ["export", str(run), "--format", "onnx"])
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    errors = [ln for ln in result.stderr.splitlines() if ln.lower().startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "manifest.json" in errors[0] and "bytes are free" in errors[0], errors
    assert (run / "train.json").read_bytes() == before
    assert not (run / "manifest.json").exists()  # never half-written
    assert not list(run.glob(fsio.TMP_PREFIX + "*"))


# --- `tlx verify --server` against a server that breaks the protocol (issue 24) ----------
# A tiny fake KServe v2 server (http.server in a thread) answers each malformed variant; the
# real-server cases (malformed requests, a killed stub, a killed `tlx serve`) are in
# tests/serve/test_server.py and tests/serve/test_resilience.py.

_GOOD_CONFIG = {
    "name": "vgg16",
    "max_batch_size": 16,
    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}],
    "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}],
    "instance_group": [{"count": 1}],
    "parameters": {},
}


def _config_with(**changes: object) -> dict:
    return {**_GOOD_CONFIG, **changes}


def _answer(rows: int | None = None, cols: int = 10, shape: list | None = None) -> Callable:
    """An infer answer in JSON: ``rows`` x ``cols`` zeros (rows: as many as were sent)."""

    def answer(sent: int) -> dict:
        n = sent if rows is None else rows
        return {
            "outputs": [
                {
                    "name": "logits",
                    "datatype": "FP32",
                    "shape": shape or [n, cols],
                    "data": [0.0] * (n * cols),
                }
            ]
        }

    return answer


# id -> (config (or a non-dict JSON value), infer answer, what the one error line names)
MALFORMED_SERVERS = {
    "server-config-a-list": ([_GOOD_CONFIG], _answer(), "json list"),
    "server-input-without-name": (
        _config_with(input=[{"data_type": "TYPE_FP32", "dims": [3, 32, 32]}]),
        _answer(),
        "no 'name'",
    ),
    "server-string-dims": (
        _config_with(input=[{"name": "input", "dims": ["3", "32", "32"]}]),
        _answer(),
        "input dims",
    ),
    "server-string-count": (_config_with(instance_group=[{"count": "two"}]), _answer(), "count"),
    "server-string-max-batch": (_config_with(max_batch_size="16"), _answer(), "max_batch_size"),
    "server-wrong-output-rows": (_GOOD_CONFIG, _answer(rows=1), "expected ["),
    "server-wrong-output-classes": (_GOOD_CONFIG, _answer(cols=7), "7 logits per image"),
    "server-shape-not-the-data": (_GOOD_CONFIG, _answer(shape=[3, 3]), "malformed infer response"),
}


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, dict]]:
    """A KServe v2 look-alike on a free port; ``behaviour`` sets its config and answers."""
    import http.server
    import threading

    behaviour: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _send(self, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(behaviour["config"] if self.path.endswith("/config") else {})

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            head = int(self.headers.get("Inference-Header-Content-Length", length))
            header = json.loads(self.rfile.read(length)[:head])
            self._send(behaviour["answer"](int(header["inputs"][0]["shape"][0])))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", behaviour
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("case", sorted(MALFORMED_SERVERS))
def test_verify_server_with_a_malformed_answer_is_exit_2_in_one_line(
    case: str, fake_server: tuple[str, dict], pristine_run: Path, tmp_path: Path
) -> None:
    from exporter.core.manifest import FileRecord, Manifest, save_manifest

    url, behaviour = fake_server
    behaviour["config"], behaviour["answer"], says = MALFORMED_SERVERS[case]
    run = tmp_path / "run"
    shutil.copytree(pristine_run, run, copy_function=_link_weights_copy_rest)
    save_manifest(run, Manifest(source=FileRecord.of(run, "model.safetensors"), metadata={}))
    result = CliRunner().invoke(app, ["verify", str(run), "--server", url, "--samples", "4"])
    stderr = result.stderr
    assert result.exit_code == 2, (result.exit_code, stderr, result.stdout[-500:])
    assert "Traceback" not in stderr and "Traceback" not in result.stdout
    errors = [ln for ln in stderr.splitlines() if ln.lower().startswith("error")]
    assert len(errors) == 1, stderr
    assert url in errors[0] and says in errors[0].lower(), errors[0]


def _small_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """This disk reports ``free`` bytes; the up-front resource check is off (as under
    TLX_SKIP_RESOURCE_CHECK=1), so the writers themselves meet the full disk."""
    import shutil as shutil_mod
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda p: usage(free * 10, free * 9, free))
    monkeypatch.setenv("TLX_SKIP_RESOURCE_CHECK", "1")


@pytest.mark.parametrize(
    ("fmt", "name", "how"),
    [("torchscript", "model.ts", "too-small"), ("pt2", "model.pt2", "fails-mid-write")],
)
def test_torch_exports_on_a_full_disk_are_exit_3_with_no_temp_file(
    pristine_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    name: str,
    how: str,
) -> None:
    """torch's zip writer aborted the process on a short write (c10::Error, exit 134, a
    511 MB temp file left): the file is now serialized in memory and written by Python."""
    import errno

    from exporter.core import fsio

    run = tmp_path / "run"
    shutil.copytree(pristine_run, run, copy_function=_link_weights_copy_rest)
    if how == "too-small":
        _small_disk(monkeypatch, 100 << 20)  # VGG16's 528 MB cannot fit: refused up front
    else:
        monkeypatch.setenv("TLX_SKIP_RESOURCE_CHECK", "1")

        def full_disk(path: Path, data: bytes) -> None:
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(fsio, "_write_file", full_disk)
    result = CliRunner().invoke(app, ["export", str(run), "--format", fmt])
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    errors = [ln for ln in result.stderr.splitlines() if ln.lower().startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert name in errors[0] and "bytes are free" in errors[0], errors
    assert not (run / name).exists() and not list(run.glob(fsio.TMP_PREFIX + "*"))


def test_training_on_a_full_disk_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the resource check skipped, safetensors met the full disk: exit 70 before."""
    from exporter.core import fsio

    _small_disk(monkeypatch, 100 << 20)
    out = tmp_path / "out"
    argv = [*SYN, "--image-size", "32", "--train-size", "10", "--val-size", "8"]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = CliRunner().invoke(app, [*argv, "--batch-size", "8", "--epochs", "1"])
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    errors = [ln for ln in result.stderr.splitlines() if ln.lower().startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "bytes are free" in errors[0], errors
    assert "model.safetensors" in errors[0] or "state.pt" in errors[0], errors
    assert not list(out.rglob(fsio.TMP_PREFIX + "*"))
