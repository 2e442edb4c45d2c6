"""Error hierarchy. Each class carries the process exit code the CLI returns for it.

The library raises these; only ``exporter.cli`` turns them into a message and an exit code.
Messages must say how to fix the problem (Polygraphy's rule: verbose beats cryptic).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE = 1
EXIT_USAGE = 2
EXIT_ENV = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class TlxError(Exception):
    """Base class of every error tlx reports to a user."""

    exit_code: int = EXIT_USAGE


class UsageError(TlxError):
    """Bad option or bad input: a missing file, a corrupt model, a wrong shape (exit 2)."""

    exit_code = EXIT_USAGE


class InputFileError(UsageError):
    """A file handed to tlx is missing, corrupt, untrusted or of the wrong kind (exit 2)."""


class PredictInputError(InputFileError, ValueError):
    """An input ``Predictor.predict``/``logits`` cannot use (exit 2): not an image, an
    unreadable file, an empty, too elongated or NaN/Inf image, a bad option, a closed
    predictor. Also a ``ValueError``, as Python's own calls on bad values or closed files."""


class IntegrityError(InputFileError):
    """A file's sha256 does not match the manifest (exit 2): it is never loaded."""


class GateFailed(TlxError):
    """A quality gate failed: parity, accuracy floor, bench regression, NaN loss (exit 1)."""

    exit_code = EXIT_GATE


class EnvironmentUnavailable(TlxError):
    """A requested device, runtime or download is unavailable or fell back (exit 3)."""

    exit_code = EXIT_ENV


class DiskFull(EnvironmentUnavailable):
    """A write ran out of disk space (exit 3); the previous file, if any, is left intact."""


class RuntimeUnavailable(EnvironmentUnavailable):
    """A runtime cannot run on this machine (missing package, no CUDA, provider fell back)."""


class Interrupted(TlxError):
    """Run stopped by a signal after saving a resumable checkpoint (exit 130 / 143)."""

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = EXIT_SIGTERM if signum == 15 else EXIT_SIGINT


def shown(value: str, limit: int = 60) -> str:
    """A user-supplied name made safe for a one-line message (repr, truncated)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
