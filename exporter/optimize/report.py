"""optimize.json's timing block, optimize.md and the Pareto plot (accuracy against latency).

Every variant built in the command is in the table and the plot, shipped or not, so a user
sees what the budget cost and what it bought; the shipped ones are marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.config import PRUNED_VARIANTS
from exporter.core.fsio import write_text
from exporter.core.report import markdown_table, new_figure, save_png
from exporter.core.runfolder import OPTIMIZE_MD as MD_NAME
from exporter.core.runfolder import OPTIMIZE_PNG as PLOT_NAME
from exporter.core.runfolder import WEIGHTS_NAME
from exporter.optimize.ship import VARIANT_PRECISION, is_fixed_hw

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.optimize.ship import VariantResult

TEACHER = "trained model"


def time_built(info: Run, results: list[VariantResult]) -> dict[str, Any]:
    """Time every built file (and ``model.onnx`` when exported) at batch 1 on this machine."""
    from exporter.optimize.timing import Timed, time_variants

    files = [
        Timed(r.path, r.path, VARIANT_PRECISION[r.variant], is_fixed_hw(r.variant, r.details))
        for r in results
        if r.path and (Path(info.run_dir) / r.path).is_file()
    ]
    manifest = info.manifest if info.has_manifest else None
    if manifest is not None and "model.onnx" in manifest.artifacts:
        files.insert(0, Timed("model.onnx", "model.onnx", "fp32"))
    return time_variants(info, files)


# One column per (key, optimize.md's header, the number's format); an empty cell reads "-".
# The terminal shows a subset (exporter/cli/optimize_cmd.py).
COLUMNS = (
    ("variant", "variant", ""),
    ("file", "file", ""),
    ("status", "status", ""),
    ("params", "params", ",d"),
    ("mmacs", "MMACs", ",.0f"),
    ("mb", "MB", ".1f"),
    ("accuracy_candidate", "accuracy", ".2%"),
    ("top1_agreement", "agreement", ".2%"),
    ("accuracy_delta_points", "Δ points", "+.2f"),
    ("ci95_points", "Δ 95% CI", ""),
    ("max_abs_logit_diff", "max |Δ|", ".2e"),
    ("ort-cpu", "ort-cpu p50 ms", ".2f"),
    ("openvino", "openvino p50 ms", ".2f"),
    ("eager", "eager p50 ms", ".2f"),
)
FORMATTERS = {
    key: lambda x, spec=spec: "-" if x is None else format(x, spec) for key, _, spec in COLUMNS
}


def variant_rows(variants: list[dict[str, Any]], timing: dict[str, Any]) -> list[dict[str, Any]]:
    """optimize.json's variants as table rows (keys of :data:`COLUMNS`), latencies included."""
    p50 = timing.get("p50_ms", {})
    rows = []
    for v in variants:
        gate, prune = v.get("gate") or {}, v.get("prune") or {}
        diff = gate.get("accuracy_difference") or {}
        low, high = diff.get("ci95_low_points"), diff.get("ci95_high_points")
        # A pruned model is another model: logit differences say nothing about it.
        logits = bool(gate) and v["variant"] not in PRUNED_VARIANTS
        max_diff = (gate.get("comparison") or {}).get("max_abs_error") if logits else None
        rows.append(
            {
                **v,
                **gate,  # accuracy_candidate, top1_agreement, accuracy_delta_points
                "file": v.get("path") or v["artifact"],
                "params": prune.get("params"),
                "mmacs": prune["macs"] / 1e6 if prune.get("macs") else None,
                "mb": v["file_bytes"] / 1e6 if v.get("file_bytes") else None,
                "ci95_points": None if low is None else f"[{low:+.2f}, {high:+.2f}]",
                "max_abs_logit_diff": max_diff,
                **p50.get(v.get("path") or "", {}),
            }
        )
    return rows


def write_optimize_md(run: Path, data: dict[str, Any]) -> None:
    """Write optimize.md (every variant's numbers) and optimize.png (the Pareto plot)."""
    timing = data.get("timing") or {}
    p50 = timing.get("p50_ms", {})
    rows = variant_rows(data["variants"], timing)
    formatters = FORMATTERS | {"file": lambda name: f"`{name}`"}
    if p50.get(TEACHER) or "model.onnx" in p50:
        reference = {"variant": TEACHER, "file": WEIGHTS_NAME, "status": "reference"}
        rows.insert(0, {**reference, **p50.get("model.onnx", {}), **p50.get(TEACHER, {})})
    lines = [
        f"# tlx optimize {data['run_dir']}",
        "",
        f"Gate images: {data['eval_images']} held-out. Pruned variants are a different model: "
        "judged by the task-level profile (accuracy drop and top-1 agreement vs the trained "
        "model); logit tolerances do not apply to them.",
        f"Latency: batch 1, {timing.get('threads', '?')} threads, median of interleaved "
        "rounds on this machine.",
        "",
        markdown_table(rows, [c[:2] for c in COLUMNS], formatters=formatters),
        "",
    ]
    lines += [
        f"- not timed: {s['runtime']} on {s['file']}: {s['reason']}"
        for s in timing.get("skipped", [])
    ]
    write_text(run / MD_NAME, "\n".join(lines) + "\n")
    _pareto(run / PLOT_NAME, data)


def _pareto(dest: Path, data: dict[str, Any]) -> None:
    """Held-out accuracy against ort-cpu batch-1 latency; shipped variants filled."""
    points = []
    p50 = (data.get("timing") or {}).get("p50_ms", {})
    for v in data["variants"]:
        gate, ms = v.get("gate"), p50.get(v.get("path") or "", {}).get("ort-cpu")
        if gate and ms is not None:
            points.append((ms, 100 * gate["accuracy_candidate"], v))
    if not points:
        return
    fig, axes = new_figure(size=(7, 4.5))
    ax = axes[0][0]
    ref_acc = 100 * points[0][2]["gate"]["accuracy_reference"]
    ref_ms = p50.get("model.onnx", {}).get("ort-cpu")
    if ref_ms is not None:
        ax.scatter([ref_ms], [ref_acc], marker="*", s=160, color="black", label="model.onnx")
    for ms, acc, v in points:
        shipped = v["status"] == "shipped"
        ax.scatter([ms], [acc], s=60, facecolors="tab:green" if shipped else "none",
                   edgecolors="tab:green" if shipped else "tab:red")  # fmt: skip
        ax.annotate(v.get("path") or v["artifact"], (ms, acc), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    ax.axhline(ref_acc, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("ort-cpu latency, batch 1 (ms, log scale)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("tlx optimize: accuracy vs latency (filled: shipped, hollow: rejected)")
    save_png(dest, fig)
