"""Is a run's Triton repository still what ``tlx export --format triton`` packaged?

No runtime runs the ``triton`` format, so ``tlx verify`` would otherwise vouch for a run whose
repository was edited afterwards: a reordered ``labels.txt`` makes Triton's classification
name the wrong class for every answer, and a changed ``config.pbtxt`` serves other shapes or
precisions than the ones judged. The manifest lists every file of the repository with its
sha256 (the check ``tlx inspect`` shows as ``MISMATCH``); the labels must also be the run's
class names, in output order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core.config import TRITON
from exporter.core.errors import IntegrityError, shown

if TYPE_CHECKING:
    from exporter.core.runfolder import Run

# The output's class names, one per line (Triton's label_filename). exporter/deploy writes
# it and sits above verify, so the name is declared here, where it is checked.
LABELS_FILE = "labels.txt"


def check_triton_repositories(run: Run) -> list[str]:
    """Check every ``triton`` entry of the run's manifest; return the entries checked.

    Raises:
        IntegrityError: a file of the repository is missing, a link, or differs from its
            manifest hash (``config.pbtxt``, ``labels.txt``, the model, ...), or
            ``labels.txt`` does not list the run's class names in order.
    """
    checked = []
    for name, entry in run.manifest.artifacts.items():
        if entry.format != TRITON:
            continue
        run.check_files(entry.files)  # each file hashed once per command
        labels = run.run_dir / name / LABELS_FILE
        if any(f.path == f"{name}/{LABELS_FILE}" for f in entry.files):
            _check_labels(labels, run.class_names)
        checked.append(name)
    return checked


def _check_labels(path: Path, class_names: list[str]) -> None:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if lines == list(class_names):
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(lines, class_names, strict=False)) if a != b),
        min(len(lines), len(class_names)),
    )
    got = shown(lines[first]) if first < len(lines) else "nothing"
    want = shown(class_names[first]) if first < len(class_names) else "nothing"
    raise IntegrityError(
        f"{path} does not list the run's classes in output order: line {first + 1} is {got}, "
        f"train.json says {want}; re-export it with `tlx export RUN --format triton --force`"
    )
