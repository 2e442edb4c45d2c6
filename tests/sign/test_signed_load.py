"""A real exported run, signed: it loads with its key, each file hashed once, the library's
verifier accepts it, and bench/verify reports end up in the model card number for number."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.errors import EXIT_OK


def test_signed_load_runs_and_hashes_each_file_once(
    signed_run: Path, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter
    from exporter.core import fsio

    hashed: list[str] = []
    real = fsio.sha256_file
    monkeypatch.setattr(fsio, "sha256_file", lambda p, **kw: hashed.append(str(p)) or real(p, **kw))
    with exporter.load(signed_run, public_key=keys.public) as predictor:
        logits = predictor.logits(np.zeros((2, 3, 32, 32), dtype=np.float32))
    assert logits.shape == (2, 10)
    assert hashed == []  # the manifest check reused the signature check's digests
    with exporter.load(signed_run) as predictor:  # no key: the manifest check hashes itself
        predictor.logits(np.zeros((1, 3, 32, 32), dtype=np.float32))
    assert any(p.endswith("model.onnx") for p in hashed)


def test_library_verifier_accepts_the_real_run(signed_run: Path, keys) -> None:
    cmd = [sys.executable, "-m", "model_signing", "verify", "key", str(signed_run)]
    cmd += ["--signature", str(signed_run / "model.sig"), "--public_key", str(keys.public)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # the CLI path; exporter.load with a key is covered above
def test_predict_with_public_key(signed_run: Path, keys, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    args = ["predict", str(signed_run), str(image), "--public-key", str(keys.public)]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["artifact"] == "model.onnx"


def _table(card: str, heading: str) -> list[list[str]]:
    """The rows of the first Markdown table under ``## heading``."""
    section = card.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


@pytest.mark.slow  # a real verify and bench (test_model_card.py checks the card on fixed reports)
def test_model_card_numbers_match_verify_and_bench(
    onnx_run: Path, link_run, tmp_path: Path, keys
) -> None:
    from exporter.bench.bench import bench_run
    from exporter.core.config import BenchConfig, VerifyConfig
    from exporter.sign.signing import sign_run
    from exporter.verify.report import write_reports
    from exporter.verify.verify import verify_run

    run = link_run(onnx_run, tmp_path / "run")
    write_reports(verify_run(run, VerifyConfig(runtimes=("ort-cpu",), samples=0)))
    bench_run(run, BenchConfig(runtimes=("ort-cpu",), batch_sizes=(1,), warmup=1, iters=4))
    card = (run / "MODEL_CARD.md").read_text()  # written by bench
    verify = json.loads((run / "verify.json").read_text())
    bench = json.loads((run / "bench.json").read_text())

    assert card.startswith("---\nlicense: ")
    front = card.split("---", 2)[1]
    for key in ("library_name:", "tags:", "datasets:", "metrics:"):
        assert key in front
    parity = {(r[0], r[3]): r for r in _table(card, "Shipped artifacts and parity")}
    for c in verify["candidates"]:
        row = parity[(c["artifact"], c["runtime"])]
        assert row[4] == ("pass" if c["passed"] else "fail")
        assert float(row[5]) == c["overall"]["max_abs_error"]
        assert float(row[6]) == c["overall"]["top1_agreement_pct"]
    speed = {(r[0], r[1], int(r[3])): r for r in _table(card, "Speed on this machine")}
    ok_rows = [r for r in bench["rows"] if r["status"] == "ok"]
    assert ok_rows and len(speed) == len(ok_rows)
    for r in ok_rows:
        row = speed[(r["artifact"], r["runtime"], r["batch_size"])]
        assert float(row[4]) == r["latency_ms_p50"]
        assert float(row[5]) == r["throughput_img_s"]
    assert bench["environment"]["cpu_model"] in card
    assert re.search(r"instruction set: [^;]+;", card)
    assert "CUDA results were not verified" in card  # verify ran on the CPU only

    sign_run(run, keys.private)  # refreshes the card and signs it with the reports
    refreshed = (run / "MODEL_CARD.md").read_text()
    assert _table(refreshed, "Speed on this machine") == _table(card, "Speed on this machine")
    assert "provenance.json" in refreshed.split("## Provenance and signature")[1]
