"""The signature check on its own: the tamper matrix, wrong key, missing signature, nothing
parsed before the check passes, and the library's own verifier agreeing with tlx.

The run here holds small stand-in files (the check never parses one); the real-model loads
are in test_signed_load.py.
"""

from __future__ import annotations

import builtins
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.errors import EXIT_OK, EXIT_USAGE, IntegrityError
from exporter.sign.verification import verify_signature

TARGETS = ("model.onnx", "manifest.json", "triton/vgg16/config.pbtxt")
TAMPERS = ("change", "add", "remove", "rename", "symlink")
MODEL_SUFFIXES = (".onnx", ".safetensors", ".ts", ".pt2", ".pbtxt")


def library_verify(run: Path, public: Path) -> subprocess.CompletedProcess[str]:
    """The model-signing library's own command-line verifier (no tlx code involved)."""
    cmd = [sys.executable, "-m", "model_signing", "verify", "key", str(run)]
    cmd += ["--signature", str(run / "model.sig"), "--public_key", str(public)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_signed_run_verifies_with_tlx_and_the_library(tiny_signed_run: Path, keys) -> None:
    run = tiny_signed_run
    check = verify_signature(run, keys.public)
    assert {"model.onnx", "manifest.json", "train.json", "provenance.json"} <= set(check.digests)
    assert {"MODEL_CARD.md", "triton/vgg16/config.pbtxt"} <= set(check.digests)
    assert not any(p.startswith((".tlx.lock", "model.sig")) for p in check.digests)
    result = library_verify(run, keys.public)
    assert result.returncode == 0, result.stdout + result.stderr
    cli = CliRunner().invoke(app, ["verify", str(run), "--public-key", str(keys.public)])
    assert cli.exit_code == EXIT_OK, cli.output
    assert "signature ok" in cli.stdout


def test_volatile_files_stay_outside_the_signature(
    tiny_signed_run: Path, keys, clone_run, tmp_path: Path
) -> None:
    run = clone_run(tiny_signed_run, tmp_path / "run")
    for rel in ("checkpoint/state.pt", "rejected/model.int8.onnx", "loadtest.json"):
        (run / rel).parent.mkdir(exist_ok=True)
        (run / rel).write_bytes(b"written after signing")
    (run / ".tlx.lock").write_text("pid 1")
    verify_signature(run, keys.public)


@pytest.mark.parametrize("how", TAMPERS)
@pytest.mark.parametrize("target", TARGETS)
def test_tamper_matrix_names_the_file(
    tiny_signed_run: Path, keys, clone_run, tamper, tmp_path: Path, target: str, how: str
) -> None:
    run = clone_run(tiny_signed_run, tmp_path / "run")
    named = tamper(run, target, how)
    with pytest.raises(IntegrityError, match=re.escape(str(run / named))) as info:
        verify_signature(run, keys.public)
    assert "\n" not in str(info.value)
    cli = CliRunner().invoke(app, ["verify", str(run), "--public-key", str(keys.public)])
    assert cli.exit_code == EXIT_USAGE and named in cli.output


@pytest.mark.parametrize(
    "how",
    ["change", *(pytest.param(h, marks=pytest.mark.slow) for h in ("add", "remove", "symlink"))],
)
def test_library_verifier_fails_too(
    tiny_signed_run: Path, keys, clone_run, tamper, tmp_path: Path, how: str
) -> None:
    run = clone_run(tiny_signed_run, tmp_path / "run")
    tamper(run, "triton/vgg16/config.pbtxt", how)
    assert library_verify(run, keys.public).returncode != 0


def test_wrong_key_missing_signature_and_bad_key_exit_2(
    tiny_signed_run: Path, keys, other_keys, clone_run, tmp_path: Path
) -> None:
    runner = CliRunner()
    run = str(tiny_signed_run)
    wrong = runner.invoke(app, ["verify", run, "--public-key", str(other_keys.public)])
    assert wrong.exit_code == EXIT_USAGE
    assert "does not verify with" in wrong.output and "Traceback" not in wrong.output
    not_a_key = runner.invoke(app, ["verify", run, "--public-key", f"{run}/train.json"])
    assert not_a_key.exit_code == EXIT_USAGE and "--public-key" in not_a_key.output
    nowhere = runner.invoke(app, ["verify", run, "--public-key", str(tmp_path / "none.pem")])
    assert nowhere.exit_code == EXIT_USAGE and "no such file" in nowhere.output
    unsigned = clone_run(tiny_signed_run, tmp_path / "run")
    (unsigned / "model.sig").unlink()
    missing = runner.invoke(app, ["verify", str(unsigned), "--public-key", str(keys.public)])
    assert missing.exit_code == EXIT_USAGE and "model.sig not found" in missing.output
    (unsigned / "model.sig").write_text("{not json")
    garbage = runner.invoke(app, ["verify", str(unsigned), "--public-key", str(keys.public)])
    assert garbage.exit_code == EXIT_USAGE and "not a model-signing signature" in garbage.output


def start_probe(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, record every model file opened by anything but a hasher, every ORT
    session and every safetensors load (tests start it after tampering)."""
    opened: list[str] = []
    real_open = builtins.open

    def probe_open(file, *args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        hashing = caller.startswith("model_signing._hashing") or caller == "exporter.core.fsio"
        if not hashing and str(file).endswith(MODEL_SUFFIXES):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    import onnxruntime
    import safetensors.torch

    def recording(real):
        def call(path, *args, **kwargs):
            opened.append(str(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(builtins, "open", probe_open)
    monkeypatch.setattr(io, "open", probe_open)  # pathlib's read_bytes/open go through io.open
    monkeypatch.setattr(onnxruntime, "InferenceSession", recording(onnxruntime.InferenceSession))
    monkeypatch.setattr(safetensors.torch, "load_file", recording(safetensors.torch.load_file))
    return opened


@pytest.mark.parametrize("target", [*TARGETS, "add"])
def test_load_refuses_before_opening_any_model_file(
    tiny_signed_run: Path, keys, clone_run, tamper, tmp_path: Path, monkeypatch, target: str
) -> None:
    import exporter

    run = clone_run(tiny_signed_run, tmp_path / "run")
    named = tamper(run, "model.onnx", "add") if target == "add" else tamper(run, target, "change")
    opened = start_probe(monkeypatch)  # start recording after the tampering
    with pytest.raises(IntegrityError, match=re.escape(named)):
        exporter.load(run, public_key=keys.public)
    assert opened == []


def test_the_probe_sees_an_unchecked_load(tiny_signed_run: Path, clone_run, tmp_path, monkeypatch):
    """The probe can fail: without a key, the stand-in model.onnx is opened (and refused)."""
    import exporter

    run = clone_run(tiny_signed_run, tmp_path / "run")
    opened = start_probe(monkeypatch)
    with pytest.raises(Exception):  # noqa: B017 - the stand-in bytes are no ONNX model
        exporter.load(run, variant="model.onnx")
    assert any(p.endswith("model.onnx") for p in opened)


def test_serve_and_predict_refuse_a_tampered_run(
    tiny_signed_run: Path, keys, clone_run, tamper, tmp_path: Path
) -> None:
    run = clone_run(tiny_signed_run, tmp_path / "run")
    tamper(run, "manifest.json", "change")
    runner = CliRunner()
    pub = str(keys.public)
    serve = runner.invoke(app, ["serve", str(run), "--public-key", pub])
    assert serve.exit_code == EXIT_USAGE, serve.output
    assert "manifest.json changed since signing" in serve.output
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    predict = runner.invoke(app, ["predict", str(run), str(image), "--public-key", pub])
    assert predict.exit_code == EXIT_USAGE, predict.output
    assert "manifest.json changed since signing" in predict.output


def test_a_signature_hashed_another_way_is_refused(
    tiny_signed_run: Path, keys, clone_run, tmp_path: Path
) -> None:
    import model_signing

    run = clone_run(tiny_signed_run, tmp_path / "run")
    (run / "model.sig").unlink()
    hashing = model_signing.hashing.Config().use_file_serialization(hashing_algorithm="blake3")
    hashing.set_ignored_paths(paths=["model.sig", ".tlx.lock"])
    signer = model_signing.signing.Config().use_elliptic_key_signer(private_key=keys.private)
    signer.set_hashing_config(hashing).sign(run, run / "model.sig")
    with pytest.raises(IntegrityError, match="files/blake3"):
        verify_signature(run, keys.public)
