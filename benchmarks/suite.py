"""What the suite scripts (``cpu_suite.sh``, ``gpu_suite.sh``) share: step timeouts under one
hard deadline, the combined table of several ``bench.json`` files, and the append to a
section of ``RESULTS.md``.

``gpu_suite.sh`` runs on a device machine lent for one command of at most a few minutes:
every step gets its own timeout, cut down to what the deadline still leaves after a reserve
for the summary and the archive, and a step that would get less than a useful minimum is
skipped. The script asks before each step (tested in ``tests/bench/test_suite_scripts.py``)::

    python benchmarks/suite.py --elapsed 300 --total 510 --step 200 --reserve 30
    180
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from exporter.bench.report import load_baseline
from exporter.bench.result import OK
from exporter.core.fsio import write_text
from exporter.core.report import markdown_table


def step_timeout(
    *,
    elapsed_s: float,
    total_s: float,
    step_timeout_s: float,
    reserve_s: float = 0.0,
    min_step_s: float = 1.0,
) -> int:
    """Whole seconds the next step may run; 0 means "skip it: the deadline is too close".

    Args:
        elapsed_s: seconds since the suite started.
        total_s: the hard deadline, counted from the start.
        step_timeout_s: the step's own limit.
        reserve_s: seconds kept back for what must run after every step (summary, archive).
        min_step_s: below this a step could not finish anything useful and is skipped.

    Raises:
        ValueError: a negative or non-finite argument, or ``min_step_s`` < 1.
    """
    values = {
        "elapsed": elapsed_s,
        "total": total_s,
        "step": step_timeout_s,
        "reserve": reserve_s,
        "min": min_step_s,
    }
    for name, value in values.items():
        if not (value == value and abs(value) != float("inf")) or value < 0:  # NaN/inf/negative
            raise ValueError(f"--{name} must be a finite number >= 0, got {value}")
    if min_step_s < 1:
        raise ValueError(f"--min must be >= 1 second, got {min_step_s}")
    left = int(total_s - reserve_s - elapsed_s)  # floor: never promise a second not there
    allowed = min(int(step_timeout_s), left)
    return allowed if allowed >= min_step_s else 0


def main(argv: list[str] | None = None) -> int:
    """Print :func:`step_timeout` for the command-line arguments; exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/suite.py",
        description="Seconds the next suite step may run under a hard deadline (0 = skip).",
    )
    parser.add_argument("--elapsed", type=float, required=True, help="seconds since start")
    parser.add_argument("--total", type=float, required=True, help="hard deadline, seconds")
    parser.add_argument("--step", type=float, required=True, help="the step's own timeout")
    parser.add_argument("--reserve", type=float, default=0.0, help="kept for the end")
    parser.add_argument("--min", type=float, default=1.0, help="skip below this many seconds")
    args = parser.parse_args(argv)  # bad syntax: argparse prints usage and exits 2
    try:
        seconds = step_timeout(
            elapsed_s=args.elapsed,
            total_s=args.total,
            step_timeout_s=args.step,
            reserve_s=args.reserve,
            min_step_s=args.min,
        )
    except ValueError as exc:
        print(f"benchmarks/suite.py: {exc}", file=sys.stderr)
        return 2
    print(seconds)
    return 0


SUITE_COLUMNS = (
    ("label", "grid"),
    ("image_size", "px"),
    ("device", "device"),
    ("precision", "precision"),
    ("runtime", "runtime"),
    ("artifact", "artifact"),
    ("batch_size", "batch"),
    ("latency_ms_p50", "p50 ms"),
    ("latency_ms_p90", "p90 ms"),
    ("latency_ms_p99", "p99 ms"),
    ("throughput_img_s", "img/s (p50)"),
    ("speedup", "x reference"),
    ("note", "note"),
)


def suite_rows(bench_jsons: list[Path]) -> list[dict[str, Any]]:
    """Flatten several ``bench.json`` files into one table (label = the report's folder)."""
    rows = []
    for path in bench_jsons:
        data = load_baseline(Path(path))  # same validation as a --compare baseline
        ref = data["config"].get("reference_runtime")
        for row in data["rows"]:
            note = row.get("error") or ("" if row.get("status") == OK else row.get("status"))
            rows.append(
                {
                    "label": Path(path).parent.name,
                    "image_size": data["setup"].get("image_size"),
                    **row,
                    "speedup": row.get(f"speedup_vs_{ref}"),
                    "reference": ref,
                    "note": note,
                }
            )
        for s in data.get("skipped", []):
            rows.append(
                {
                    "label": Path(path).parent.name,
                    "image_size": data["setup"].get("image_size"),
                    "device": data["setup"].get("device"),
                    "runtime": s.get("runtime"),
                    "note": f"skipped: {s.get('reason')}",
                }
            )
    return rows


def suite_markdown(bench_jsons: list[Path], *, title: str, command: str) -> str:
    """A dated RESULTS.md block: machine, versions, exact command and the combined table."""
    first = load_baseline(Path(bench_jsons[0]))
    env = first["environment"]
    device = env.get("gpu_name") if first["setup"].get("device") == "cuda" else None
    machine = device or f"{env.get('cpu_model')} ({env.get('cpu_count')} CPUs)"
    header = [
        f"### {title}: {first['created_at']}",
        "",
        f"- machine: {machine}; CPU model {env.get('cpu_model')}, {env.get('cpu_count')} CPUs",
        f"- versions: torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, "
        f"tlx {env.get('tlx')} ({(env.get('tlx_git_commit') or 'no git')[:10]})",
        f"- command: `{command}`",
        f"- threads {first['setup'].get('threads')}, timer {first['setup'].get('timer')}; "
        "runtimes interleaved round-robin; p50 = median of the timed iterations; "
        f"x reference = {first['config'].get('reference_runtime')} p50 / runtime p50 at the "
        "same size, precision and batch",
        "",
    ]
    return (
        "\n".join(header)
        + "\n"
        + markdown_table(
            suite_rows(bench_jsons),
            SUITE_COLUMNS,
            formatters={"speedup": lambda v: "" if v is None else f"{v:.2f}x"},
        )
    )


def append_to_section(dest: str | os.PathLike[str], header: str, block: str) -> None:
    """Append ``block`` at the end of the ``header`` section of a Markdown file, atomically.

    The section runs from the line equal to ``header`` (e.g. ``## tlx bench``) to the next
    line starting with ``## `` (another author's section) or the end of the file. A missing
    file or section is created at the end; other sections are left byte-for-byte alone.
    """
    path = Path(dest)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = text.splitlines(keepends=True)
    body = block.rstrip("\n") + "\n"
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == header)
    except StopIteration:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        write_text(path, f"{text}{sep}{header}\n\n{body}")
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    before = "".join(lines[:end]).rstrip("\n") + "\n\n"
    after = "".join(lines[end:])
    write_text(path, before + body + ("\n" + after if after else ""))


if __name__ == "__main__":
    sys.exit(main())
