"""Check a run folder against ``RUN/model.sig`` before anything in it is loaded.

The signature's key check and its file list come from the ``model-signing`` library; the
folder is hashed with the library's own hashing (one sha256 per file). Those digests are
handed to the opened :class:`~exporter.core.runfolder.Run`, so the manifest hash check that
follows (runtime load) reuses them instead of reading every file a second time: a signed
load reads each file once, as an unsigned one does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.errors import InputFileError, IntegrityError
from exporter.core.manifest import MANIFEST_NAME, load_manifest
from exporter.core.runfolder import TRAIN_JSON, WEIGHTS_NAME, open_run
from exporter.sign.scope import (
    SIGNATURE_NAME,
    hashing_config,
    require_model_signing,
    signed_files,
)

if TYPE_CHECKING:
    from exporter.core.runfolder import Run

# How many differing files one message names before it counts the rest.
_NAMED = 3


@dataclass(frozen=True)
class SignatureCheck:
    """A run folder that matched its signature: every signed file and its sha256."""

    run_dir: Path
    signature: Path
    digests: dict[str, str]
    keys: dict[str, Any] = field(default_factory=dict, repr=False)


def verify_signature(run_dir: str | Path, public_key: str | Path) -> SignatureCheck:
    """Check every file of ``run_dir`` against ``run_dir/model.sig`` and ``public_key``.

    Nothing in the folder but the signature is read before the signature's key check passes,
    and no file is parsed or loaded: changed, added, removed, renamed files and symbolic links
    all fail here.

    Raises:
        EnvironmentUnavailable: the ``sign`` extra is not installed (exit 3).
        InputFileError: the public key is missing or not an elliptic-curve PEM key (exit 2).
        IntegrityError: no signature, a signature the key did not make, or a file that differs
            from what was signed; the message names the file (exit 2).
    """
    ms = require_model_signing()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputFileError(f"run folder {run_dir} does not exist")
    sig = run_dir / SIGNATURE_NAME
    if sig.is_symlink() or not sig.is_file():
        raise IntegrityError(
            f"{sig} not found: the run is not signed (sign it with `tlx sign {run_dir} --key "
            "PRIVATE.pem`), so --public-key cannot vouch for it"
        )
    expected = _signed_manifest(sig, Path(public_key))
    method = expected.serialization_type
    if (method.get("method"), method.get("hash_type")) != ("files", "sha256"):
        raise IntegrityError(
            f"{sig} hashes the model as {method.get('method')}/{method.get('hash_type')}; tlx "
            "checks one sha256 per file (sign with `tlx sign`, or check it with `model_signing "
            "verify`)"
        )
    ignored = {str(p) for p in expected.serialization_type.get("ignore_paths", ())}
    ignored.add(SIGNATURE_NAME)
    keys = signed_files(run_dir, ignored)
    try:
        actual = hashing_config(ms, frozenset(ignored)).hash(run_dir)
    except (OSError, ValueError) as exc:  # a file vanished or turned into a link meanwhile
        raise IntegrityError(f"{run_dir}: the folder changed while it was checked: {exc}") from exc
    want = {rd.identifier: rd.digest.digest_hex for rd in expected.resource_descriptors()}
    got = {rd.identifier: rd.digest.digest_hex for rd in actual.resource_descriptors()}
    problems = _differences(run_dir, want, got)
    if problems:
        more = len(problems) - _NAMED
        tail = f" (and {more} more)" if more > 0 else ""
        raise IntegrityError(
            "; ".join(problems[:_NAMED]) + tail + f": the run no longer matches {sig}; "
            "restore the files or re-sign with `tlx sign`"
        )
    _require_covered(run_dir, want)
    return SignatureCheck(run_dir, sig, got, {rel: keys[rel] for rel in got if rel in keys})


def verified_run(run: Run | str | Path, public_key: str | Path) -> Run:
    """The opened run after :func:`verify_signature` passed, its hash cache filled with the
    digests just checked: its manifest check then reads no file again."""
    check = verify_signature(Path(run), public_key)  # an opened run is the path of its folder
    opened = open_run(run)
    for rel, digest in check.digests.items():
        if rel in check.keys:
            opened.remember_sha256(rel, digest, check.keys[rel])
    return opened


def _signed_manifest(sig: Path, public_key: Path) -> Any:
    """The file list the signature vouches for, after its key check.

    The public ``verifying.Config`` hashes the folder itself and returns nothing; its two
    steps are taken here (the library's ``_signing`` modules, as ``verifying.Config.verify``
    calls them) so the digests can be kept and a mismatch named file by file.
    """
    from model_signing._signing import sign_ec_key, sign_sigstore_pb

    if not public_key.is_file():
        raise InputFileError(f"--public-key {public_key}: no such file")
    try:
        verifier = sign_ec_key.Verifier(public_key)
    except Exception as exc:  # cryptography raises several types for a bad key file
        raise InputFileError(
            f"--public-key {public_key}: not a PEM elliptic-curve public key "
            f"(P-256, P-384 or P-521): {exc}"
        ) from exc
    try:
        signature = sign_sigstore_pb.Signature.read(sig)
    except Exception as exc:  # untrusted JSON: any parse failure means "not a signature"
        raise IntegrityError(f"{sig} is not a model-signing signature: {exc}") from exc
    try:
        return verifier.verify(signature)
    except Exception as exc:  # InvalidSignature, a key mismatch, a foreign payload
        reason = str(exc) or exc.__class__.__name__
        raise IntegrityError(
            f"{sig} does not verify with {public_key}: signed with another key or altered "
            f"({reason.strip()})"
        ) from exc


def _differences(run_dir: Path, want: dict[str, str], got: dict[str, str]) -> list[str]:
    changed = [
        f"{run_dir / p} changed since signing"
        for p in sorted(want)
        if p in got and got[p] != want[p]
    ]
    added = [f"{run_dir / p} was added after signing" for p in sorted(set(got) - set(want))]
    removed = [f"{run_dir / p} was removed since signing" for p in sorted(set(want) - set(got))]
    return changed + added + removed


def _require_covered(run_dir: Path, signed: dict[str, str]) -> None:
    """Every file a load may read must be signed (a signature made with its own ignore list
    could leave an artifact out)."""
    needed = [MANIFEST_NAME, TRAIN_JSON, WEIGHTS_NAME]
    if (run_dir / MANIFEST_NAME).is_file():
        manifest = load_manifest(run_dir)
        needed += [f.path for a in manifest.artifacts.values() for f in a.files]
    missing = [p for p in needed if p not in signed and (run_dir / p).exists()]
    if missing:
        raise IntegrityError(
            f"{run_dir / missing[0]} is not covered by {run_dir / SIGNATURE_NAME}: "
            "re-sign the run with `tlx sign`"
        )
