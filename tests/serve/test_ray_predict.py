"""``tlx predict --engine ray``: a local Ray (2 CPUs) against in-process ``tlx predict``."""

from __future__ import annotations

import csv
import json
import socket
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


@pytest.fixture
def http_root(images: Path) -> Iterator[str]:
    """``images`` served by a local ``http.server`` (an http URI without the network)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(images))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_list_of_paths_and_uris_with_logits(
    local_ray: None, onnx_run: Path, images: Path, tmp_path: Path, http_root: str
) -> None:
    import pyarrow.parquet as pq

    listed = tmp_path / "images.txt"
    entries = [
        str(images / "0.png"),
        (images / "1.png").as_uri(),  # file://
        f"{http_root}/2.png",
        f"{http_root}/missing.png",
    ]
    listed.write_text("# the inputs\n\n" + "\n".join(entries) + "\n")
    out = tmp_path / "uris.parquet"
    result = invoke(
        str(onnx_run), str(listed), "--engine", "ray", "--output", str(out), "--top-k", "2",
        "--logits", "--skip-bad",
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    table = pq.read_table(out)
    assert table.column_names == ["source", "rank", "class", "probability", "logit"]
    got = table.to_pylist()
    want = predict_images(
        onnx_run,
        [images / f"{i}.png" for i in range(3)],
        PredictConfig(top_k=2),
        keep_logits=True,
    )
    index = {name: i for i, name in enumerate(want.classes)}
    rows = [
        (entries[n], rank, name, prob, float(p.logits[index[name]]))
        for n, p in enumerate(want.predictions)
        for rank, (name, prob) in enumerate(p.top, start=1)
    ]
    assert [(r["source"], r["rank"], r["class"]) for r in got] == [w[:3] for w in rows]
    np.testing.assert_allclose([r["probability"] for r in got], [w[3] for w in rows], atol=1e-6)
    np.testing.assert_allclose([r["logit"] for r in got], [w[4] for w in rows], atol=1e-5)
    with open(tmp_path / "uris.failures.csv", newline="") as fh:
        (failure,) = list(csv.DictReader(fh))
    assert failure["source"] == entries[3] and failure["reason"]


@pytest.mark.slow
def test_public_key_is_checked_once_on_the_driver(
    local_ray: None, onnx_run: Path, images: Path, tmp_path: Path, link_run, key_pair
) -> None:
    pytest.importorskip("model_signing")
    (private, public), (_, other) = key_pair(tmp_path, "signer"), key_pair(tmp_path, "other")
    run = link_run(onnx_run, tmp_path / "run")
    signed = CliRunner().invoke(app, ["sign", str(run), "--key", str(private)])
    assert signed.exit_code == EXIT_OK, signed.output
    out = tmp_path / "signed.jsonl"
    args = [str(run), str(images / "0.png"), "--engine", "ray", "--output", str(out)]
    result = invoke(*args, "--public-key", str(other))
    assert result.exit_code == EXIT_USAGE and "model.sig" in result.output, result.output
    assert not out.exists()  # refused before any actor started
    result = invoke(*args, "--public-key", str(public))
    assert result.exit_code == EXIT_OK, result.output
    assert len(out.read_text().splitlines()) == 5


def test_logits_column_in_process(onnx_run: Path, images: Path) -> None:
    result = invoke(str(onnx_run), str(images / "0.png"), "--format", "csv", "--logits")
    assert result.exit_code == EXIT_OK, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert list(rows[0]) == ["source", "rank", "class", "probability", "logit"]
    logits = [float(r["logit"]) for r in rows]
    assert logits == sorted(logits, reverse=True)  # ranked by probability = by logit
    result = invoke(str(onnx_run), str(images / "0.png"), "--format", "json", "--logits")
    assert result.exit_code == EXIT_USAGE and "--format csv" in result.output


def test_actor_plan_reads_tune_json(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from exporter.serve.ray_plan import actor_plan

    choice = SimpleNamespace(artifact=SimpleNamespace(name="model.onnx"), runtime="ort-cpu")
    assert actor_plan(tmp_path, PredictConfig(), choice, 4) == (4, 1)  # no plan: 1 thread
    plan = {"instances": 1, "threads_per_instance": 2, "max_batch": 32, "queue_delay_us": 500}
    tune = {"artifact": "model.onnx", "runtime": "ort-cpu", "plan": plan}
    (tmp_path / "tune.json").write_text(json.dumps(tune))
    assert actor_plan(tmp_path, PredictConfig(), choice, 2) == (1, 2)
    assert actor_plan(tmp_path, PredictConfig(), choice, 8) == (1, 2)  # the plan's instances
    assert actor_plan(tmp_path, PredictConfig(threads=1), choice, 2) == (2, 1)  # given wins
    other = SimpleNamespace(artifact=SimpleNamespace(name="model.int8.onnx"), runtime="ort-cpu")
    assert actor_plan(tmp_path, PredictConfig(), other, 2) == (2, 1)  # another artifact's plan


def test_pinned_files_must_not_change(tmp_path: Path) -> None:
    import hashlib

    from exporter.core.errors import IntegrityError
    from exporter.serve.ray_predict import check_pinned

    (tmp_path / "manifest.json").write_text("{}")
    pinned = {"manifest.json": hashlib.sha256(b"{}").hexdigest()}
    check_pinned(tmp_path, pinned)
    (tmp_path / "manifest.json").write_text('{"swapped": 1}')
    with pytest.raises(IntegrityError, match="changed after"):
        check_pinned(tmp_path, pinned)


def test_list_files_are_read_in_order_each_image_once(images: Path, tmp_path: Path) -> None:
    from exporter.core.errors import UsageError
    from exporter.serve.ray_inputs import ray_inputs

    listed = tmp_path / "l.txt"
    uri = "s3://bucket/a.png"
    listed.write_text(f"# c\n{images / '1.png'}\n\n{uri}\n{images / '0.png'}\n{uri}\n")
    got = ray_inputs([listed, images / "1.png"])
    assert [s for s, _ in got] == [str(images / "1.png"), uri, str(images / "0.png")]
    assert got[1] == (uri, uri)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match="names no image"):
        ray_inputs([tmp_path / "empty.txt"])


def test_tasks_are_whole_batches_and_blocks_bounded() -> None:
    from exporter.serve.ray_plan import MAX_BLOCKS, block_count, task_images

    assert task_images(2001, 32, 2) == 224  # 7 batches: at least 4 tasks per actor
    assert task_images(100_000, 32, 2) == 256 and task_images(10, 32, 2) == 32
    assert task_images(100_000, 500, 2) == 500  # never less than one batch
    assert block_count(2001, 224) == 9 and block_count(1, 32) == 1
    many = block_count(10_000_000, 256)
    assert many <= MAX_BLOCKS and 10_000_000 / many >= 256


class _NoCluster:
    """Stands for the ``ray`` module: not connected, and ``init`` refuses like Ray does."""

    class exceptions:  # the attribute ``ray.exceptions``
        pass

    calls = 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **kw: object) -> None:
        self.calls += 1
        raise ConnectionError(f"Failed to connect to Ray cluster at {kw['address']}.")


def test_an_address_where_nothing_listens_is_exit_3_before_ray_tries() -> None:
    from exporter.core.errors import EnvironmentUnavailable
    from exporter.serve.ray_predict import connect

    with socket.socket() as s:  # a port that was free a moment ago: refused, not a hang
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = _NoCluster()
    with pytest.raises(EnvironmentUnavailable, match=rf"--ray-address 127.0.0.1:{port}: no Ray"):
        connect(ray, f"127.0.0.1:{port}")
    assert ray.calls == 0  # Ray's own retries of a wrong address last over a minute


def test_a_refused_connection_is_exit_3_with_the_token_hint() -> None:
    from exporter.core.errors import EnvironmentUnavailable
    from exporter.serve.ray_predict import connect

    with socket.socket() as server:  # something answers TCP; Ray still refuses
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(EnvironmentUnavailable, match="RAY_AUTH_MODE=token") as err:
            connect(_NoCluster(), address)
    assert err.value.exit_code == EXIT_ENV and address in str(err.value)


def test_failures_file_reads_back_names_with_commas_quotes_and_newlines(tmp_path: Path) -> None:
    from exporter.serve.ray_predict import _write_failures

    failures = [("a,b.png", "not an image"), ('q"uote.png', "x"), ("new\nline.png", "y, z")]
    _write_failures(tmp_path / "f.csv", failures)
    with open(tmp_path / "f.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["source", "reason"], *map(list, failures)]
