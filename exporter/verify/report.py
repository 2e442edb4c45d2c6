"""``verify.json`` and ``verify.md``: the files and table rows of a :class:`ParityReport`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from exporter.core.machine import machine_line
from exporter.core.runfolder import VERIFY_JSON, VERIFY_MD, VERIFY_SERVER_JSON, VERIFY_SERVER_MD
from exporter.verify.result import ParityReport


def write_reports(report: ParityReport, *, server: bool = False) -> tuple[Path, Path]:
    """Write ``verify.json`` and ``verify.md`` (``verify-server.*`` for ``tlx verify
    --server``, beside the run's own) into the run folder, atomically."""
    from exporter.core.report import write_markdown, write_report_json
    from exporter.core.runlock import run_lock

    names = (VERIFY_SERVER_JSON, VERIFY_SERVER_MD) if server else (VERIFY_JSON, VERIFY_MD)
    json_path, md_path = (report.run_dir / name for name in names)
    data = {**report.to_dict(), "command": "verify --server"} if server else report.to_dict()
    # verify.json/.md are a pair: no other verify's file in between.
    with contextlib.nullcontext() if server else run_lock(report.run_dir, "verify"):
        write_report_json(json_path, data)
        write_markdown(md_path, render_markdown(report))
    report.files = [json_path, md_path]
    return json_path, md_path


def summary_rows(report: ParityReport) -> list[dict[str, Any]]:
    """One flat row per candidate for tables (CLI and Markdown)."""
    rows = []
    for c in report.candidates:
        o = c.overall or {}
        layer = (c.localization or {}).get("layer")
        rows.append(
            {
                "runtime": c.runtime,
                "artifact": c.artifact,
                "precision": c.precision,
                "max_abs_error": o.get("max_abs_error"),
                "p99_abs_error": o.get("p99_abs_error"),
                "min_cosine_similarity": o.get("min_cosine_similarity"),
                "top1_agreement_pct": o.get("top1_agreement_pct"),
                "accuracy_candidate_pct": c.accuracy_candidate_pct,
                "nonfinite_n": o.get("nonfinite_n"),
                "result": "pass" if c.passed else ("error" if c.error else "FAIL"),
                "why": (
                    "; ".join(c.failures)
                    or ("" if c.task_checked else "not task-checked (--samples 0)")
                    or _task_level(c)
                )
                + (f" [first diverging layer: {layer}]" if layer else ""),
            }
        )
    return rows


def candidate_lines(report: ParityReport, *, quiet: bool = False) -> list[tuple[str, bool]]:
    """``(line, passed)`` per candidate, all on one line: the terminal's table folds long
    names on narrow terminals. ``quiet`` keeps those that need a look."""
    out = []
    for c in report.candidates:
        if c.passed and c.task_checked and quiet:
            continue
        line = f"{'pass' if c.passed else 'FAIL'} {c.runtime}/{c.artifact}"
        if c.failures:
            line += ": " + "; ".join(c.failures)
        if not c.task_checked:
            line += " (NOT task-checked: no held-out images, --samples 0)"
        if c.localization is not None:
            layer = c.localization.get("layer")
            line += f" [first diverging layer: {layer or c.localization.get('reason')}]"
        out.append((line, c.passed))
    return out


def _task_level(c: Any) -> str:
    """A pruned model's verdict in words: task level, with the accuracy change's interval."""
    ci = c.accuracy_change_ci95_points
    if c.overall_note is None or not ci or ci.get("ci95_low_points") is None:
        return ""
    return (
        f"task level: accuracy {ci['delta_points']:+.2f} points "
        f"(95% CI {ci['ci95_low_points']:+.2f} to {ci['ci95_high_points']:+.2f}); "
        "no logit tolerance applies"
    )


def _g(digits: int) -> Any:
    # Errors span 1e-8..1e1 and agreement 0..100: significant digits, not fixed decimals.
    return lambda value: "" if value is None else f"{value:.{digits}g}"


# verify.md's table and the terminal's, short enough for an 80-column log.
COLUMNS = (
    ("runtime", "runtime"),
    ("artifact", "artifact"),
    ("precision", "prec"),
    ("max_abs_error", "max abs err"),
    ("p99_abs_error", "p99 abs err"),
    ("min_cosine_similarity", "min cos"),
    ("top1_agreement_pct", "top-1 %"),
    ("accuracy_candidate_pct", "acc %"),
    ("nonfinite_n", "NaN/Inf"),
    ("result", "result"),
    ("why", "why / first diverging layer"),
)
FORMATTERS = {"max_abs_error": _g(3), "p99_abs_error": _g(3)} | {
    key: _g(4) for key in ("min_cosine_similarity", "top1_agreement_pct", "accuracy_candidate_pct")
}


def render_markdown(report: ParityReport) -> str:
    """The human-readable verify.md."""
    from exporter.core.report import markdown_table

    lines = [
        f"# tlx verify: {report.verdict.upper()}",
        "",
        f"Run: `{report.run_dir}`  ",
        "Reference: eager fp32 from model.safetensors on CPU  ",
        "Inputs: " + ", ".join(f"{k} {v['shape']}" for k, v in report.inputs.items()) + "  ",
        f"Machine: {machine_line(report.machine)}",
        "",
        markdown_table(summary_rows(report), COLUMNS, formatters=FORMATTERS),
    ]
    ref_acc = next(
        (c.accuracy_reference_pct for c in report.candidates if c.accuracy_reference_pct), None
    )
    if ref_acc is not None:
        lines.append(f"Reference held-out accuracy: {ref_acc:.2f}%\n")
    if report.skipped:
        lines.append("## Skipped\n")
        lines.extend(f"- {s['runtime']}: {s['reason']}" for s in report.skipped)
        lines.append("")
    if report.notes:
        lines.append("## Notes\n")
        lines.extend(f"- {n}" for n in report.notes)
        lines.append("")
    return "\n".join(lines)
