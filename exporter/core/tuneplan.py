"""``RUN/tune.json``'s plan as the defaults of ``tlx serve`` and of the Triton export.

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
from exporter.core.runfolder import TUNE_JSON

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


def tuned_settings(
    run_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    variant: str | None = None,
    runtime: str | None = None,
) -> dict[str, int]:
    """The plan of ``tune.json`` when it applies, else an empty dict.

    It applies on the CPU, when ``variant`` is None or names the tuned artifact (its variant
    or file name) and ``runtime`` is None or the tuned runtime.
    """
    data = read_tune(run_dir)
    if data is None or not device.startswith("cpu"):
        return {}
    if variant is not None and variant not in (data.get("variant"), data.get("artifact")):
        return {}
    if runtime is not None and runtime != data.get("runtime"):
        return {}
    return {k: int(data["plan"][k]) for k in PLAN_KEYS}


def serve_settings(
    run_dir: str | os.PathLike[str],
    given: dict[str, int | None],
    *,
    device: str,
    variant: str | None,
    runtime: str | None,
) -> tuple[dict[str, int | None], bool]:
    """``tlx serve``'s max_batch, max_queue_delay_us, instances and threads: each the value
    given on the command line, else the tuned one (None: ServeConfig's default).

    Instances and threads go together: given either, neither is taken from the plan (the
    tuned threads were measured for the tuned instance count). Returns the settings and
    whether any came from the plan.
    """
    plan = tuned_settings(run_dir, device=device, variant=variant, runtime=runtime)
    tuned: dict[str, int] = {}
    if plan:
        tuned = {"max_batch": plan["max_batch"], "max_queue_delay_us": plan["queue_delay_us"]}
        if given.get("instances") is None and given.get("threads") is None:
            tuned |= {"instances": plan["instances"], "threads": plan["threads_per_instance"]}
    out = {k: v if v is not None else tuned.get(k) for k, v in given.items()}
    return out, any(given.get(k) is None for k in tuned)


def triton_settings(
    run_dir: str | os.PathLike[str],
    given: dict[str, int | None],
    *,
    device: str,
    variant: str | None,
) -> tuple[dict[str, int | None], bool]:
    """The Triton export's max_batch_size, max_queue_delay_us and instances, as
    :func:`serve_settings` (a runtime is not chosen there: the server's backend runs it)."""
    plan = tuned_settings(run_dir, device=device, variant=variant)
    tuned = (
        {
            "max_batch_size": plan["max_batch"],
            "max_queue_delay_us": plan["queue_delay_us"],
            "instances": plan["instances"],
        }
        if plan
        else {}
    )
    out = {k: v if v is not None else tuned.get(k) for k, v in given.items()}
    return out, any(given.get(k) is None for k in tuned)
