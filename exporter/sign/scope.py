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

import os
from collections.abc import Collection
from pathlib import Path
from types import ModuleType
from typing import Any

from exporter.core.errors import EnvironmentUnavailable, IntegrityError
from exporter.core.runfolder import (
    LOADTEST_CSV,
    LOADTEST_JSON,
    LOADTEST_MD,
    LOADTEST_PNG,
    SIGNATURE_NAME,
    VERIFY_SERVER_JSON,
    VERIFY_SERVER_MD,
    file_key,
)

UNSIGNED: tuple[str, ...] = (
    ".tlx.lock",
    "checkpoint",
    "distill",  # a stopped pruning distillation's resumable state (tlx optimize --prune)
    "rejected",
    SIGNATURE_NAME,
    VERIFY_SERVER_JSON,
    VERIFY_SERVER_MD,
    LOADTEST_JSON,
    LOADTEST_MD,
    LOADTEST_CSV,
    LOADTEST_PNG,
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


def signed_files(run_dir: Path, ignored: Collection[str] = UNSIGNED) -> dict[str, Any]:
    """Every file a signature covers (relative POSIX path → its identity before hashing).

    Raises:
        IntegrityError: a symbolic link anywhere in the folder, named (the library refuses
            links even under ignored paths; a link could point anywhere after signing).
    """
    keys: dict[str, Any] = {}
    for folder, dirs, files in os.walk(run_dir):
        rel_dir = Path(folder).relative_to(run_dir)
        for name in sorted(dirs + files):
            path = Path(folder) / name
            if path.is_symlink():
                raise IntegrityError(
                    f"{path} is a symbolic link: a signed run holds regular files only"
                )
            rel = (rel_dir / name).as_posix()
            skip = any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in ignored)
            if name in files and not skip:
                keys[rel] = file_key(path)
    return keys


def read_report(path: Path) -> dict[str, Any] | None:
    """A JSON report of the run as a dict, or None when it is missing or unreadable (the
    card and the provenance describe what is there; they never fail on a missing report)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
