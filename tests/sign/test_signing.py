"""``tlx sign``: what it writes, what it refuses, and the hint when the extra is missing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.errors import EXIT_ENV, EXIT_OK, EXIT_USAGE, EnvironmentUnavailable
from exporter.sign.scope import UNSIGNED
from exporter.sign.signing import sign_run
from exporter.sign.verification import verify_signature


def sign_cli(run: Path, key: Path):
    return CliRunner().invoke(app, ["sign", str(run), "--key", str(key)])


def test_sign_writes_signature_provenance_and_card(make_tiny_run, keys, tmp_path: Path) -> None:
    run = make_tiny_run(tmp_path / "run")
    result = sign_cli(run, keys.private)
    assert result.exit_code == EXIT_OK, result.output
    assert {"model.sig", "provenance.json", "MODEL_CARD.md"} <= {p.name for p in run.iterdir()}
    check = verify_signature(run, keys.public)
    assert f"signed {len(check.digests)} files" in result.stdout
    bundle = json.loads((run / "model.sig").read_text())
    assert "dsseEnvelope" in bundle  # the library's Sigstore bundle format
    assert not list(run.glob(".tlx-tmp-*"))
    # Signing again (after a change) replaces the signature; the new one verifies.
    (run / "notes.txt").write_text("added before re-signing")
    assert sign_cli(run, keys.private).exit_code == EXIT_OK
    assert "notes.txt" in verify_signature(run, keys.public).digests


def test_ignore_list_is_recorded_in_the_signature(tiny_signed_run: Path) -> None:
    import base64

    bundle = json.loads((tiny_signed_run / "model.sig").read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    ignored = set(payload["predicate"]["serialization"]["ignore_paths"])
    assert set(UNSIGNED) <= ignored


@pytest.mark.parametrize("target", ["model.onnx", "triton/vgg16/config.pbtxt", "model.safetensors"])
def test_sign_refuses_a_run_that_differs_from_its_manifest(
    make_tiny_run, keys, tmp_path: Path, target: str
) -> None:
    run = make_tiny_run(tmp_path / "run")
    (run / target).write_bytes(b"changed after export")
    result = sign_cli(run, keys.private)
    assert result.exit_code == EXIT_USAGE
    assert target in result.output and "manifest" in result.output
    assert not (run / "model.sig").exists() and not (run / "provenance.json").exists()


def test_sign_refuses_bad_keys_and_unexported_runs(make_tiny_run, keys, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    run = make_tiny_run(tmp_path / "run")
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for key, words in (
        (rsa_key, "elliptic-curve"),
        (keys.public, "elliptic-curve"),
        (tmp_path / "none.pem", "no such file"),
    ):
        result = sign_cli(run, key)
        assert result.exit_code == EXIT_USAGE, result.output
        assert "--key" in result.output and words in result.output
        assert "Traceback" not in result.output
    assert not (run / "model.sig").exists()
    (run / "manifest.json").unlink()
    unexported = sign_cli(run, keys.private)
    assert unexported.exit_code == EXIT_USAGE and "tlx export" in unexported.output


def test_missing_extra_exits_3_with_the_install_hint(
    tiny_signed_run: Path, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter

    monkeypatch.setitem(sys.modules, "model_signing", None)  # import raises ImportError
    runner = CliRunner()
    for args in (
        ["sign", str(tiny_signed_run), "--key", str(keys.private)],
        ["verify", str(tiny_signed_run), "--public-key", str(keys.public)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == EXIT_ENV, result.output
        assert 'pip install -e ".[sign]"' in result.output
        assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(EnvironmentUnavailable, match=r"\.\[sign\]"):
        exporter.load(tiny_signed_run, public_key=keys.public)


def test_library_sign_holds_the_run_lock(
    make_tiny_run, keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    import exporter.sign.signing as signing
    from exporter.core.runlock import LOCK_NAME

    def is_locked(run: Path) -> bool:
        """Whether a second open of the lock file finds it held (flock is per open file)."""
        fd = os.open(run / LOCK_NAME, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    seen = []
    run = make_tiny_run(tmp_path / "run")
    real = signing.write_provenance
    monkeypatch.setattr(
        signing, "write_provenance", lambda r: seen.append(is_locked(run)) or real(r)
    )
    sign_run(run, keys.private)
    assert seen == [True]


def test_sign_refuses_a_symbolic_link_by_name(make_tiny_run, keys, tmp_path: Path) -> None:
    run = make_tiny_run(tmp_path / "run")
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "latest").symlink_to(run / "train.json")
    result = sign_cli(run, keys.private)
    assert result.exit_code == EXIT_USAGE
    assert "checkpoint/latest is a symbolic link" in result.output
    assert not (run / "model.sig").exists()
