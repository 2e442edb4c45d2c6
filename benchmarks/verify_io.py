"""How often one ``tlx verify RUN`` reads train.json and manifest.json and hashes each file.

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/verify_io.py --run /tmp/verify-io/run \
        --runtimes eager,torchscript,pt2,ort-cpu --samples 32 --repeat 3 --json out.json

Runs the real CLI in-process (``tlx verify RUN -q ...``) and counts, per file of the run:
``sha256`` calls (``exporter.core.fsio.sha256_file``, the one hasher) and the bytes they
read, Python-level opens for reading (``train.json`` and ``manifest.json`` parses; native
readers such as safetensors, ONNX Runtime and TorchScript are not seen), and ``onnx.load``
parses (the safety check before a session). It also reports the command's wall time.

It uses only what every version of the package has (``export_run``, the CLI), so the same
script measures any commit: put that commit's checkout first on ``PYTHONPATH``. The run
folder (random VGG16 weights, exported with ``--formats``) is made on the first call and
reused, so both commits verify the same files. Counts are deterministic; the wall time is
only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

FORMAT_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}


def make_run(run: Path, *, image_size: int, formats: tuple[str, ...], seed: int = 0) -> None:
    """A run folder like ``tlx train`` writes (random weights, synthetic data), exported."""
    import torch
    from safetensors.torch import save_file

    from exporter.core.config import ExportConfig
    from exporter.core.preprocess import Preprocessing
    from exporter.export.export import export_run
    from exporter.model.vgg import build_vgg16

    torch.manual_seed(seed)
    model = build_vgg16(num_classes=10, weights="none").eval()
    run.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(run / "model.safetensors"))
    data = {
        "source": "synthetic",
        "data_dir": None,
        "seed": seed,
        "train_size": 64,
        "val_size": 64,
        "image_size": image_size,
        "augment": False,
        "strict": False,
    }
    record = {
        "schema_version": 1,
        "command": "train",
        "config": {"data": data, "model": {"arch": "vgg16", "weights": "none"}},
        "dataset": {"name": "synthetic", "class_names": [f"class_{i}" for i in range(10)]},
        "preprocessing": Preprocessing(image_size=image_size).to_dict(),
        "epochs": [],
        "best": {"epoch": 0, "val_accuracy": 0.1},
    }
    (run / "train.json").write_text(json.dumps(record, indent=2))
    export_run(run, ExportConfig(formats=formats))


class Counters:
    """Patches the hasher, ``open`` and ``onnx.load`` for one call; counts per run file."""

    def __init__(self, run: Path) -> None:
        self.run = run.resolve()
        self.hashes: Counter[str] = Counter()
        self.hashed_bytes: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.onnx_parses: Counter[str] = Counter()

    def _name(self, path: Any) -> str | None:
        try:
            p = Path(path).resolve()
            return p.relative_to(self.run).as_posix()
        except (TypeError, ValueError, OSError):
            return None

    def install(self) -> None:
        import exporter.core.fsio as fsio

        self._saved: list[tuple[Any, str, Any]] = []
        original = fsio.sha256_file

        def counting_sha256(path: Any, *args: Any, **kwargs: Any) -> str:
            name = self._name(path)
            if name is not None:
                self.hashes[name] += 1
                self.hashed_bytes[name] += Path(path).stat().st_size
            return original(path, *args, **kwargs)

        # Modules that imported the function by name hold their own reference.
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("exporter") and (
                getattr(mod, "sha256_file", None) is original
            ):
                self._patch(mod, "sha256_file", counting_sha256)
        real_open = io.open

        def counting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if "r" in mode and "+" not in mode and isinstance(file, str | Path):
                name = self._name(file)
                if name is not None:
                    self.reads[name] += 1
            return real_open(file, mode, *args, **kwargs)

        self._patch(io, "open", counting_open)
        self._patch(builtins, "open", counting_open)
        try:
            import onnx
        except ImportError:
            return
        real_load = onnx.load

        def counting_load(f: Any, *args: Any, **kwargs: Any) -> Any:
            name = self._name(f)
            if name is not None:
                self.onnx_parses[name] += 1
            return real_load(f, *args, **kwargs)

        self._patch(onnx, "load", counting_load)
        self._patch(onnx, "load_model", counting_load)

    def _patch(self, obj: Any, attr: str, value: Any) -> None:
        self._saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def uninstall(self) -> None:
        for obj, attr, value in reversed(self._saved):
            setattr(obj, attr, value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256_calls": dict(sorted(self.hashes.items())),
            "sha256_mb": {k: round(v / 1e6, 1) for k, v in sorted(self.hashed_bytes.items())},
            "python_reads": dict(sorted(self.reads.items())),
            "onnx_parses": dict(sorted(self.onnx_parses.items())),
        }


def import_everything() -> None:
    """Import every exporter module first, so that every by-name import can be patched."""
    import importlib
    import pkgutil

    import exporter

    for info in pkgutil.walk_packages(exporter.__path__, "exporter."):
        try:
            importlib.import_module(info.name)
        except Exception:  # optional extras (pytriton, ...) may be missing: not on this path
            continue


def verify_once(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    from exporter.cli import app

    argv = ["verify", str(run), "-q", "--samples", str(args.samples)]
    argv += ["--runtimes", args.runtimes, "--batch-sizes", args.batch_sizes]
    counters = Counters(run)
    counters.install()
    t0 = time.perf_counter()
    try:
        app(argv, prog_name="tlx", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # click reports typer.Exit this way without standalone mode
        code = getattr(exc, "exit_code", 1)
    finally:
        wall = time.perf_counter() - t0
        counters.uninstall()
    return {"exit_code": code, "wall_s": round(wall, 3), **counters.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("/tmp/tlx-verify-io/run"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--formats", default="onnx,torchscript,pt2", help="made on first use")
    parser.add_argument("--runtimes", default="all", help="passed to tlx verify --runtimes")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--repeat", type=int, default=1, help="verify this many times")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import exporter

    if not (args.run / "manifest.json").is_file():
        formats = tuple(f for f in args.formats.split(",") if f)
        print(f"making {args.run} ({args.image_size} px, {', '.join(formats)})", flush=True)
        make_run(args.run, image_size=args.image_size, formats=formats)
    import_everything()
    rounds = [verify_once(args.run, args) for _ in range(args.repeat)]
    first = rounds[0]
    report = {
        "exporter": str(Path(exporter.__file__).parent),
        "run": str(args.run),
        "argv": sys.argv[1:],
        "wall_s": [r["wall_s"] for r in rounds],
        "wall_s_median": statistics.median(r["wall_s"] for r in rounds),
        "counts_same_every_round": all(
            {k: v for k, v in r.items() if k != "wall_s"}
            == {k: v for k, v in first.items() if k != "wall_s"}
            for r in rounds
        ),
        **{k: v for k, v in first.items() if k != "wall_s"},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
