"""bench.json → the regression gate, bench.md, bench.csv and bench.png.

Split from :mod:`exporter.bench.bench` (which measures) so that module stays about measuring;
nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.bench.op_profile import plot_profile, profile_lines
from exporter.bench.recommend import recommend, recommendation_lines
from exporter.bench.result import BENCH_SCHEMA_VERSION, OK, BenchReport
from exporter.core.errors import InputFileError
from exporter.core.machine import machine_line
from exporter.core.runfolder import BENCH_CSV, BENCH_JSON, BENCH_MD, BENCH_PNG, BENCH_PROFILE_PNG

# --- regression gate ----------------------------------------------------------------------

REGRESSION_RULE = (
    "a runtime x batch regresses when its p50 exceeds the baseline p50 by more than "
    "max_regression_pct percent AND by more than the noise band, max(p90 - p50) of this run "
    "and of the baseline; cells missing from either report are listed, not gated"
)
# One compared cell, in bench.json's ``comparison`` and in bench.md.
COMPARE_COLUMNS = (
    "runtime",
    "artifact",
    "batch_size",
    "baseline_latency_ms_p50",
    "latency_ms_p50",
    "change_pct",
    "noise_ms",
    "regressed",
)


def load_baseline(path: Path) -> dict[str, Any]:
    """Read a baseline ``bench.json`` for ``--compare``.

    Raises:
        InputFileError: missing, unreadable, or not a tlx bench report.
    """
    import json

    if not path.is_file():
        raise InputFileError(f"--compare {path}: file not found (pass a bench.json of tlx bench)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"--compare {path}: not readable JSON ({exc})") from exc
    if (
        not isinstance(data, dict)
        or data.get("command") != "bench"
        or not isinstance(data.get("rows"), list)
    ):
        raise InputFileError(f"--compare {path}: not a bench.json written by `tlx bench`")
    if data.get("schema_version") != BENCH_SCHEMA_VERSION:
        raise InputFileError(
            f"--compare {path}: schema_version {data.get('schema_version')!r}, this tlx reads "
            f"{BENCH_SCHEMA_VERSION}; rerun the baseline with this version"
        )
    return data


def _row_key(row: dict[str, Any]) -> tuple[str, str, Any]:
    return (str(row.get("runtime")), str(row.get("artifact")), row.get("batch_size"))


def compare_reports(
    current: dict[str, Any], baseline: dict[str, Any], *, max_regression_pct: float
) -> dict[str, Any]:
    """Compare two ``bench.json`` contents cell by cell (see :data:`REGRESSION_RULE`).

    Returns:
        ``{"passed", "max_regression_pct", "rule", "cells": [...], "notes": [...]}``; each cell
        carries both p50s, ``change_pct``, ``noise_ms`` and ``regressed``.
    """
    notes = []
    cur_setup, base_setup = current.get("setup", {}), baseline.get("setup", {})
    for key in ("device", "precision", "image_size", "threads"):
        if cur_setup.get(key) != base_setup.get(key):
            notes.append(f"{key} differs: {base_setup.get(key)!r} -> {cur_setup.get(key)!r}")
    base_rows = {
        _row_key(r): r for r in baseline.get("rows", []) if r.get("latency_ms_p50") is not None
    }
    cells = []
    seen = set()
    for row in current.get("rows", []):
        key = _row_key(row)
        seen.add(key)
        base = base_rows.get(key)
        p50 = row.get("latency_ms_p50")
        if p50 is None or base is None:
            if p50 is not None:
                notes.append(f"{key[0]} ({key[1]}) b{key[2]}: not in the baseline")
            continue
        b50 = float(base["latency_ms_p50"])
        noise = max(
            float(row["latency_ms_p90"]) - float(p50),
            float(base["latency_ms_p90"]) - b50,
        )
        change = (float(p50) / b50 - 1.0) * 100.0
        regressed = change > max_regression_pct and (float(p50) - b50) > noise
        values = (*key, b50, float(p50), change, noise, regressed)
        cells.append(dict(zip(COMPARE_COLUMNS, values, strict=True)))
    for key in sorted(set(base_rows) - seen, key=str):
        notes.append(f"{key[0]} ({key[1]}) b{key[2]}: in the baseline, not measured now")
    return {
        "passed": not any(c["regressed"] for c in cells),
        "max_regression_pct": max_regression_pct,
        "rule": REGRESSION_RULE,
        "cells": cells,
        "notes": notes,
    }


# --- outputs ------------------------------------------------------------------------------

TABLE_COLUMNS = (
    ("runtime", "runtime"),
    ("artifact", "artifact"),
    ("batch_size", "batch"),
    ("status", "status"),
    ("latency_ms_p50", "p50 ms"),
    ("latency_ms_p90", "p90 ms"),
    ("latency_ms_p99", "p99 ms"),
    ("latency_ms_mean", "mean ms"),
    ("latency_ms_std", "std ms"),
    ("throughput_img_s", "img/s (p50)"),
    ("cold_start_s", "cold start s"),
    ("compile_s", "compile s"),
    ("first_call_ms", "first call ms"),
)


def table_columns(ref: str) -> list[tuple[str, str]]:
    """bench.md's columns: :data:`TABLE_COLUMNS` with the speed-up over ``ref`` and the error."""
    speed = (f"speedup_vs_{ref}", f"x {ref}")
    return [*TABLE_COLUMNS[:10], speed, *TABLE_COLUMNS[10:], ("error", "error")]


def formatters(ref: str) -> dict[str, Callable[[Any], str]]:
    """The speed-up as ``1.23x``."""
    return {f"speedup_vs_{ref}": lambda v: "" if v is None else f"{v:.2f}x"}


def _tf32_note(setup: dict[str, Any]) -> str:
    # CUDA fp32 is TF32 or IEEE fp32: say which (nothing on CPU, where TF32 does not exist).
    tf32 = setup.get("tf32")
    return "" if tf32 is None else f" (TF32 {'on' if tf32 else 'off'})"


def markdown_summary(report: BenchReport) -> str:
    """``bench.md``: setup, the table with speed-ups over the reference, skips, comparison."""
    from exporter.core.report import markdown_table

    d = report.to_dict()
    setup, env = d["setup"], d["environment"]
    ref = report.config.reference_runtime
    lines = [
        f"# tlx bench: {report.run_dir}",
        "",
        f"- created: {report.created_at}",
        f"- device: {setup['device']} ({env.get('gpu_name') or env.get('cpu_model')}), "
        f"precision {setup['precision']}{_tf32_note(setup)}, threads {setup['threads']}, "
        f"timer {setup['timer']}",
        f"- input: {setup['image_size']}x{setup['image_size']} px, seed {setup['input_seed']}, "
        "same batches for every runtime",
        f"- machine: {machine_line(d['machine'])}",
        f"- latency: {setup['latency_scope']}; throughput = {setup['throughput_basis']}",
        f"- versions: torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, "
        f"tlx {env.get('tlx')} ({env.get('tlx_git_commit') or 'no git'})",
        "",
        markdown_table(d["rows"], table_columns(ref), formatters=formatters(ref)),
    ]
    fastest = report.fastest()
    if fastest:
        lines.append(
            "Fastest (p50) per batch size: "
            + ", ".join(
                f"b{b}: {r['runtime']} ({r['latency_ms_p50']:.3f} ms)" for b, r in fastest.items()
            )
            + "\n"
        )
    lines += recommendation_lines(report.recommendations, report.recommendation_notes)
    lines += profile_lines(report.profile or [])
    if report.skipped:
        lines += ["## Skipped", "", markdown_table(report.skipped, ["runtime", "reason"])]
    if report.comparison:
        comp = report.comparison
        verdict = "PASSED" if comp["passed"] else "FAILED"
        lines += [
            f"## Comparison with {comp.get('baseline')}: {verdict}",
            "",
            f"Rule: {comp['rule']} (max_regression_pct = {comp['max_regression_pct']:g}).",
            "",
            markdown_table(comp["cells"], COMPARE_COLUMNS),
        ]
        lines += [f"- {n}" for n in comp["notes"]]
    return "\n".join(lines) + "\n"


def plot_latency(
    ax: Any, xs: list[int], rows: list[dict[str, Any]], label: str, bar_label: str | None = None
) -> None:
    """p50 latency over ``xs`` with a p90–p99 bar at each point (bench.png, loadtest.png)."""
    p50, p90, p99 = ([r[f"latency_ms_p{p}"] for r in rows] for p in (50, 90, 99))
    (line,) = ax.plot(xs, p50, marker="o", label=label)
    ax.vlines(xs, p90, p99, colors=line.get_color(), linewidth=3, alpha=0.5, label=bar_label)


def plot_bench(report: BenchReport, dest: Path) -> None:
    """``bench.png``: p50 latency with p90–p99 whiskers, and throughput, vs batch size."""
    from exporter.core.report import new_figure, save_png

    fig, axes = new_figure(ncols=2, size=(5.5, 4.0))
    ax_lat, ax_thr = axes[0]
    series: dict[str, list[dict[str, Any]]] = {}
    names = [r.runtime for r in report.results]
    for row in report.rows():
        if row["status"] != OK or row.get("latency_ms_p50") is None:
            continue
        label = row["runtime"]
        if names.count(row["runtime"]) > 1:  # one runtime on several artifacts
            label = f"{row['runtime']} ({row['artifact']})"
        series.setdefault(label, []).append(row)
    for label, rows in series.items():
        rows.sort(key=lambda r: r["batch_size"])
        xs = [r["batch_size"] for r in rows]
        plot_latency(ax_lat, xs, rows, label=label)
        ax_thr.plot(xs, [r["throughput_img_s"] for r in rows], marker="o", label=label)
    title = (
        f"{report.config.device} {report.config.precision}, "
        f"{report.setup['image_size']} px, {report.setup['threads']} threads"
    )
    ax_lat.set(xlabel="batch size", ylabel="latency ms (p50; bar p90-p99)", title=title)
    ax_thr.set(xlabel="batch size", ylabel="throughput img/s (batch / p50)", title=title)
    for ax in (ax_lat, ax_thr):
        if series:
            ax.set_xscale("log", base=2)
            ticks = sorted({r["batch_size"] for rows in series.values() for r in rows})
            ax.set_xticks(ticks, [str(b) for b in ticks])  # batch sizes, not powers of two
            ax.set_yscale("log")
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no successful measurements", ha="center", transform=ax.transAxes)
        ax.grid(True, which="both", alpha=0.3)
    save_png(dest, fig)


def write_bench_reports(report: BenchReport, out_dir: Path) -> dict[str, str]:
    """Add the recommendations, then write bench.csv, .md, .png and (last) bench.json."""
    from exporter.core.report import write_csv, write_markdown, write_report_json
    from exporter.core.safepath import guard

    guard(out_dir).mkdir(parents=True, exist_ok=True)
    report.recommendations, report.recommendation_notes = recommend(report)
    paths = {name: out_dir / name for name in (BENCH_CSV, BENCH_MD, BENCH_PNG, BENCH_JSON)}
    report.files = {name: str(p) for name, p in paths.items()}
    write_csv(paths[BENCH_CSV], report.rows())
    write_markdown(paths[BENCH_MD], markdown_summary(report))
    plot_bench(report, paths[BENCH_PNG])
    if report.profile is not None:
        paths[BENCH_PROFILE_PNG] = out_dir / BENCH_PROFILE_PNG
        report.files[BENCH_PROFILE_PNG] = str(paths[BENCH_PROFILE_PNG])
        plot_profile(report.profile, paths[BENCH_PROFILE_PNG])
    write_report_json(paths[BENCH_JSON], report.to_dict())
    return report.files
