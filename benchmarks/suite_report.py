"""The benchmark suites' tables (``cpu_suite.sh``, ``gpu_suite.sh``): several ``bench.json``
files as one dated RESULTS.md block, and appending it under a section of RESULTS.md.

Scripts run from the repository root and import this with ``sys.path.insert(0, "benchmarks")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from exporter.bench.report import load_baseline
from exporter.bench.result import OK
from exporter.core.fsio import write_text
from exporter.core.report import markdown_table

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
