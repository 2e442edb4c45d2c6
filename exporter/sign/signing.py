"""``tlx sign RUN --key PRIVATE.pem``: an OpenSSF model signature over the run's deployable files.

Order: the manifest must match every file it lists (each file hashed once), then
``provenance.json`` and ``MODEL_CARD.md`` are written, then the library signs the folder
(everything but :data:`~exporter.sign.scope.UNSIGNED`) and ``RUN/model.sig`` is replaced
atomically. The signature is the library's own format: ``model_signing verify key RUN
--signature RUN/model.sig --public_key PUBLIC.pem`` accepts it without tlx.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from exporter.core.errors import InputFileError, IntegrityError
from exporter.core.fsio import write_bytes
from exporter.core.runfolder import Run, open_run
from exporter.core.runlock import locks_run
from exporter.sign.card import write_model_card
from exporter.sign.provenance import write_provenance
from exporter.sign.scope import (
    SIGNATURE_NAME,
    UNSIGNED,
    hashing_config,
    require_model_signing,
    signed_files,
)


@dataclass(frozen=True)
class SignResult:
    """What ``tlx sign`` wrote."""

    run_dir: Path
    signature: Path
    provenance: Path
    model_card: Path
    files_signed: int
    unsigned: tuple[str, ...] = UNSIGNED


@locks_run("sign")
def sign_run(run: Run | str | Path, private_key: str | Path) -> SignResult:
    """Write provenance and the model card, then sign the run folder into ``RUN/model.sig``.

    Raises:
        EnvironmentUnavailable: the ``sign`` extra is not installed (exit 3).
        InputFileError: the key is missing or not an elliptic-curve PEM private key, or the
            run has no manifest (exit 2).
        IntegrityError: a file listed in manifest.json is missing, a link, or differs (the
            message names it); nothing is signed (exit 2).
    """
    ms = require_model_signing()
    run = open_run(run)
    key = Path(private_key)
    if not key.is_file():
        raise InputFileError(f"--key {key}: no such file")
    # The manifest must match every file it lists (and the weights), each hashed once.
    manifest = run.manifest
    run.check_files([manifest.source, *(f for a in manifest.artifacts.values() for f in a.files)])
    signed_files(run.run_dir)  # a symbolic link is refused by name before anything is written
    config = _signing_config(ms, key).set_hashing_config(hashing_config(ms))
    provenance = write_provenance(run)
    card = write_model_card(run)
    # The library writes the signature with a plain write: sign into a private folder
    # outside the run (a temp file inside would be hashed as part of the model), then
    # replace model.sig atomically.
    with tempfile.TemporaryDirectory(prefix="tlx-sign-") as tmp:
        out = Path(tmp) / SIGNATURE_NAME
        try:
            config.sign(run.run_dir, out)
        except (OSError, ValueError) as exc:  # the folder changed while it was hashed
            raise IntegrityError(f"{run.run_dir}: cannot sign: {exc}") from exc
        data = out.read_bytes()
    signature = run.run_dir / SIGNATURE_NAME
    write_bytes(signature, data)
    signed = _count_signed(data)
    return SignResult(run.run_dir, signature, provenance, card, signed)


def _signing_config(ms: ModuleType, key: Path) -> Any:
    """The library's elliptic-curve signing (it refuses other key types with its reason)."""
    try:
        return ms.signing.Config().use_elliptic_key_signer(private_key=key)
    except Exception as exc:  # cryptography raises several types for a bad key file
        raise InputFileError(
            f"--key {key}: not a PEM elliptic-curve private key (P-256, P-384 or P-521) "
            f"without a password: {exc}"
        ) from exc


def _count_signed(signature: bytes) -> int:
    """How many files the written signature lists (its DSSE payload's subjects)."""
    import base64
    import json

    try:
        bundle = json.loads(signature)
        payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        return len(payload["predicate"]["resources"])
    except (KeyError, TypeError, ValueError):
        return 0
