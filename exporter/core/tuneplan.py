"""``RUN/tune.json``'s plan as the defaults of ``tlx serve`` and of the Triton repository.

``tlx tune`` writes the file (``exporter/bench/tune.py``); the commands that serve read it
here, so neither stage imports the other. A plan applies only to what it was measured on:
the same artifact and runtime (when the user names them) and the CPU. An option given on
the command line always wins over the plan.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from exporter.core.errors import InputFileError

TUNE_JSON = "tune.json"
PLAN_KEYS = ("instances", "threads_per_instance", "max_batch", "queue_delay_us")


def read_tune(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``RUN/tune.json`` parsed, or None when there is none.

    Raises:
        InputFileError: the file is not a tune report with a complete ``plan``.
    """
    path = Path(run_dir) / TUNE_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        plan = data["plan"]
        if not all(isinstance(plan[k], int) and plan[k] >= 0 for k in PLAN_KEYS):
            raise ValueError("plan values must be non-negative integers")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(
            f"{path}: not a tune report ({exc.__class__.__name__}: {exc}); rerun `tlx tune "
            f"{run_dir}` or delete the file"
        ) from exc
    return data


def serve_settings(
    run_dir: str | os.PathLike[str],
    given: dict[str, int | None],
    *,
    device: str,
    variant: str | None,
    runtime: str | None = None,
) -> tuple[dict[str, int | None], bool]:
    """The served model's max_batch, max_queue_delay_us, instances and threads (fields of
    :class:`~exporter.core.config.TritonConfig`, for ``tlx serve`` and the packaged Triton
    repository): each the value given on the command line, else the tuned one (None: the
    config's default). Returns the settings and whether any came from the plan.

    The plan applies on the CPU, when ``variant`` is None or names the tuned artifact (its
    variant or file name) and ``runtime`` is None (a repository: the server's backend runs
    it) or the tuned runtime. Instances and threads go together: given either, neither is
    taken from the plan (the tuned threads were measured for the tuned instance count).
    """
    data = read_tune(run_dir)
    tuned: dict[str, int] = {}
    if (
        data is not None
        and device.startswith("cpu")
        and variant in (None, data.get("variant"), data.get("artifact"))
        and runtime in (None, data.get("runtime"))
    ):
        plan = {k: int(data["plan"][k]) for k in PLAN_KEYS}
        tuned = {"max_batch": plan["max_batch"], "max_queue_delay_us": plan["queue_delay_us"]}
        if given.get("instances") is None and given.get("threads") is None:
            tuned |= {"instances": plan["instances"], "threads": plan["threads_per_instance"]}
    out = {k: v if v is not None else tuned.get(k) for k, v in given.items()}
    return out, any(given.get(k) is None for k in tuned)
