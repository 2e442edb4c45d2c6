"""``tlx predict --engine ray``: a local Ray (2 CPUs) against in-process ``tlx predict``."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.config import PredictConfig
from exporter.core.errors import EXIT_ENV, EXIT_OK, EXIT_USAGE
from exporter.serve.predict import predict_images

pytestmark = pytest.mark.timeout(600)


def invoke(*args: str):
    return CliRunner().invoke(app, ["predict", *args])


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight readable images of mixed sizes and one corrupt one."""
    root = tmp_path_factory.mktemp("ray_images")
    rng = np.random.default_rng(1)
    for i in range(8):
        h, w = 30 + 3 * i, 40 + 2 * i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def _in_process(run: Path, folder: Path) -> list[tuple[str, int, str, float]]:
    result = predict_images(run, [folder], PredictConfig(top_k=3), on_error=lambda _b: None)
    return [
        (p.source, rank, name, prob)
        for p in result.predictions
        for rank, (name, prob) in enumerate(p.top, start=1)
    ]


@pytest.mark.slow
def test_parquet_equals_in_process_and_lists_the_failure(
    local_ray: None, onnx_run: Path, images: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "preds.parquet"
    result = invoke(
        str(onnx_run),
        str(images),
        "--engine",
        "ray",
        "--output",
        str(out),
        "--top-k",
        "3",
        "--batch-size",
        "3",
    )
    assert result.exit_code == EXIT_USAGE, result.output  # the corrupt image
    assert "broken.png" in result.output
    table = pq.read_table(out).to_pylist()
    got = [(r["source"], r["rank"], r["class"], r["probability"]) for r in table]
    want = _in_process(onnx_run, images)
    assert len(got) == len(want) == 8 * 3  # no row lost or duplicated, input order
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=0, atol=1e-6)
    with open(tmp_path / "preds.failures.csv", newline="") as fh:
        failures = list(csv.DictReader(fh))
    assert [Path(f["source"]).name for f in failures] == ["broken.png"] and failures[0]["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_csv_and_json_lines_by_suffix(
    local_ray: None, onnx_run: Path, images: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"preds{suffix}"
    result = invoke(
        str(onnx_run),
        str(images),
        "--engine",
        "ray",
        "--output",
        str(out),
        "--top-k",
        "2",
        "--skip-bad",
    )
    assert result.exit_code == EXIT_OK, result.output
    if suffix == ".csv":
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["source", "rank", "class", "probability"]
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert set(rows[0]) == {"source", "rank", "class", "probability"}
    assert len(rows) == 8 * 2


def test_output_is_required_and_checked(onnx_run: Path, images: Path, tmp_path: Path) -> None:
    result = invoke(str(onnx_run), str(images), "--engine", "ray")
    assert result.exit_code == EXIT_USAGE and "--output" in result.output
    result = invoke(
        str(onnx_run), str(images), "--engine", "ray", "--output", str(tmp_path / "x.txt")
    )
    assert result.exit_code == EXIT_USAGE and ".parquet" in result.output


def test_missing_ray_names_the_install(
    onnx_run: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    result = invoke(
        str(onnx_run), str(images), "--engine", "ray", "--output", str(tmp_path / "p.parquet")
    )
    assert result.exit_code == EXIT_ENV
    assert 'pip install -e ".[scale]"' in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_relative_inputs_are_read_by_the_actors_and_reported_as_given(
    local_ray: None, onnx_run: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The actors were started before this chdir: they must not resolve the spelling themselves.
    monkeypatch.chdir(images.parent)
    out = tmp_path / "rel.jsonl"
    result = invoke(
        str(onnx_run),
        images.name,
        "--engine",
        "ray",
        "--output",
        str(out),
        "--top-k",
        "1",
        "--skip-bad",
    )
    assert result.exit_code == EXIT_OK, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(r["source"].startswith(f"{images.name}/") for r in rows)
