"""What a signature covers, and the one place the optional ``model-signing`` package is imported.

A signature covers every file of the run folder except :data:`UNSIGNED`: the lock file, the
resumable training state and the variants optimize rejected (never loaded by serve/predict),
the signature itself, and the reports a running server produces after deployment (verify
--server, the load test). Everything else — weights, artifacts, ``manifest.json``,
``train.json``, the Triton repository, ``provenance.json``, the verify/bench reports that
choose what is served, ``MODEL_CARD.md`` — is signed, so an added file fails the check too.
The list is recorded in the signature, so the library's own verifier skips the same paths.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from exporter.core.errors import EnvironmentUnavailable

SIGNATURE_NAME = "model.sig"
PROVENANCE_NAME = "provenance.json"
MODEL_CARD_NAME = "MODEL_CARD.md"
CONFUSION_PNG = "confusion_matrix.png"

UNSIGNED: tuple[str, ...] = (
    ".tlx.lock",
    "checkpoint",
    "rejected",
    SIGNATURE_NAME,
    "verify-server.json",
    "verify-server.md",
    "loadtest.json",
    "loadtest.md",
    "loadtest.csv",
    "loadtest.png",
)

INSTALL_HINT = 'pip install -e ".[sign]"'


def require_model_signing() -> ModuleType:
    """Import ``model_signing`` (and the pyOpenSSL it imports without declaring it).

    Raises:
        EnvironmentUnavailable: the ``sign`` extra is not installed (exit 3).
    """
    try:
        import model_signing
        import model_signing.hashing
        import model_signing.signing
    except ImportError as exc:
        raise EnvironmentUnavailable(
            f"signing needs the model-signing package ({exc}): {INSTALL_HINT}"
        ) from exc
    return model_signing


def hashing_config(ms: ModuleType, ignored: tuple[str, ...] | frozenset[str] = UNSIGNED):
    """The library's hashing: one sha256 per file (what manifest.json records too), no symlinks."""
    return (
        ms.hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256")
        .set_ignored_paths(paths=[Path(p) for p in ignored], ignore_git_paths=True)
        .set_allow_symlinks(False)
    )
