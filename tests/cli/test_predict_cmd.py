"""``tlx predict`` through the CLI: formats, folders, globs, unreadable images, exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.errors import EXIT_OK, EXIT_USAGE


def invoke(*args: str):
    # Wide enough that the table does not fold the temp paths it prints.
    return CliRunner().invoke(app, ["predict", *args], env={"COLUMNS": "300"})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three readable images (nested, mixed modes and sizes) and one corrupt JPEG."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (64, 32, 4), dtype=np.uint8)).save(root / "sub/c.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "notes.txt").write_text("not an image: ignored in folders")
    return root


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.lower().startswith("error")]


def test_folder_with_one_corrupt_image(onnx_run: Path, folder: Path) -> None:
    result = invoke(str(onnx_run), str(folder), "--format", "json", "--top-k", "3")
    assert result.exit_code == EXIT_USAGE, result.stderr
    (line,) = _errors(result.stderr)
    assert "broken.jpg" in line and "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    sources = [Path(p["source"]).name for p in data["predictions"]]
    assert sorted(sources) == ["a.png", "b.jpg", "c.png"]
    assert data["artifact"] == "model.onnx" and data["runtime"] == "ort-cpu"
    assert [Path(b["source"]).name for b in data["unreadable"]] == ["broken.jpg"]
    classes = json.loads((onnx_run / "train.json").read_text())["dataset"]["class_names"]
    for p in data["predictions"]:
        assert len(p["top"]) == 3 and all(t["class"] in classes for t in p["top"])
        probs = [t["probability"] for t in p["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9


def test_skip_bad_exits_0(onnx_run: Path, folder: Path) -> None:
    result = invoke(str(onnx_run), str(folder), "--skip-bad", "--format", "csv", "--top-k", "2")
    assert result.exit_code == EXIT_OK, result.stderr
    assert not _errors(result.stderr) and "broken.jpg" in result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["source", "rank", "class", "probability"]
    assert len(rows) == 3 * 2 and {r["rank"] for r in rows} == {"1", "2"}


def test_table_and_glob(onnx_run: Path, folder: Path) -> None:
    result = invoke(str(onnx_run), f"{folder}/*.png", str(folder / "b.jpg"), "--batch-size", "1")
    assert result.exit_code == EXIT_OK, result.stderr
    assert "a.png" in result.stdout and "b.jpg" in result.stdout and "c.png" not in result.stdout


def test_same_logits_as_the_library(onnx_run: Path, folder: Path) -> None:
    import exporter

    result = invoke(str(onnx_run), str(folder / "a.png"), "--format", "json", "--top-k", "10")
    with exporter.load(onnx_run) as p:
        (want,) = p.predict([folder / "a.png"], top_k=10)
    got = json.loads(result.stdout)["predictions"][0]["top"]
    assert [(t["class"], t["probability"]) for t in got] == want.top


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("{img}/nothing-*.png",), "nothing-"),
        (("{img}/missing.png",), "missing.png"),
        (("{img}", "--variant", "../../../etc/passwd"), "--variant"),
        (("{img}", "--runtime", "$(reboot)"), "$(reboot)"),
        (("{img}", "--top-k", "0"), "--top-k"),
        (("{img}", "--batch-size", "-3"), "--batch-size"),
        (("{img}", "--format", "yaml"), "--format"),
        (("{img}", "--device", "tpu"), "--device"),
    ],
)
def test_bad_options_are_one_line_exit_2(
    onnx_run: Path, folder: Path, args: tuple[str, ...], says: str
) -> None:
    result = invoke(str(onnx_run), *(a.replace("{img}", str(folder)) for a in args))
    assert result.exit_code == EXIT_USAGE, (result.stdout, result.stderr)
    (line,) = _errors(result.stderr)
    assert says in line
    assert "Traceback" not in result.stderr and not result.stdout


def test_all_unreadable_with_skip_bad_is_exit_2(onnx_run: Path, folder: Path) -> None:
    result = invoke(str(onnx_run), str(folder / "broken.jpg"), "--skip-bad")
    assert result.exit_code == EXIT_USAGE
    (line,) = _errors(result.stderr)
    assert "none of the 1 images" in line


def test_engine_is_a_choice_and_logits_need_a_logit_column(tmp_path: Path) -> None:
    # Both are refused from the options alone, before the run is read.
    result = invoke(str(tmp_path), "x.png", "--engine", "spark")
    assert result.exit_code == EXIT_USAGE and "--engine" in result.output, result.output
    result = invoke(str(tmp_path), "x.png", "--format", "json", "--logits")
    assert result.exit_code == EXIT_USAGE and "--format csv" in result.output, result.output
