"""``tlx bench --profile``: where the time goes, per operator, for each ONNX artifact × runtime.

Each runtime's own profiler (:meth:`Runtime.profile <exporter.runtimes.base.Runtime.profile>`:
ORT's ``enable_profiling`` trace, OpenVINO's ``PERF_COUNT`` counters) gives per-node times;
here they are grouped by operator type and by layer (node name), with shares of the
runtime's own operator total: the profile means something on a busy machine too, absolute
times do not. In an int8 artifact, a compute operator that ran in fp32 is flagged: for ORT a
``Conv`` / ``Gemm`` / ``MatMul`` (a quantized one runs as ``QLinearConv``, ``QGemm``,
``MatMulInteger``...), for OpenVINO a kernel whose name ends in FP32 rather than I8/U8.
A runtime without a profiler is listed as skipped with its reason. The profile's section of
bench.md (``## Where the time goes``), its terminal lines and ``bench-profile.png`` are here too.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from exporter.bench.measure import close_quietly
from exporter.core.errors import InputFileError, RuntimeUnavailable
from exporter.runtimes.profiling import NodeTime, RawProfile

PROFILE_RUNS = 10
TOP_OPS = 8
TOP_LAYERS = 10
# Operators that carry a convolution's or a matrix product's FLOPs (ORT, then OpenVINO names).
COMPUTE_OPS = frozenset(
    {"Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose"}  # ORT
    | {"Gemm", "FusedGemm", "MatMul", "FusedMatMul"}  # ORT
    | {"Convolution", "GroupConvolution", "FullyConnected"}  # OpenVINO
)
_INT8_MARKS = ("I8", "U8", "INT8")
FP32_COLOR, OTHER_COLOR = "tab:red", "tab:blue"


def node_precision(node: NodeTime) -> str:
    """What a node computed in, as far as its op type and kernel tell."""
    kernel = node.kernel.upper()
    if any(mark in kernel for mark in _INT8_MARKS) or node.op_type.startswith(("QLinear", "QGemm")):
        return "int8"
    if node.op_type.endswith("Integer"):  # ConvInteger, MatMulInteger
        return "int8"
    if "BF16" in kernel:
        return "bf16"
    if "F16" in kernel.replace("FP16", "F16") and "FP32" not in kernel:
        return "fp16"
    return "fp32"


def runs_in_fp32(node: NodeTime) -> bool:
    """A compute operator (convolution, matrix product) that ran in fp32."""
    return node.op_type in COMPUTE_OPS and node_precision(node) == "fp32"


def group_profile(
    raw: RawProfile, *, int8: bool, top_ops: int = TOP_OPS, top_layers: int = TOP_LAYERS
) -> dict[str, Any]:
    """Group a runtime's per-node times by operator type (the top ``top_ops``, the rest summed
    as ``(other)``) and by layer (the slowest ``top_layers``), with shares; for an ``int8``
    artifact, flag the compute operators that ran in fp32."""
    runs = max(raw.runs, 1)
    total = sum(n.total_us for n in raw.nodes)
    layers = _by_layer(raw.nodes, int8=int8, runs=runs, total=total)
    fp32 = [r for r in layers if r["fp32_in_int8"]]
    return {
        "profiler": raw.profiler,
        "runs": raw.runs,
        "ops_ms_per_run": total / runs / 1e3,
        "run_ms_per_run": raw.run_us / runs / 1e3 if raw.run_us else None,
        "by_op_type": _by_op_type(raw.nodes, int8=int8, runs=runs, total=total, top=top_ops),
        "by_layer": layers[:top_layers],
        "fp32_in_int8": {
            "layers": [r["layer"] for r in fp32],
            "share_pct": round(sum(r["share_pct"] or 0.0 for r in fp32), 2),
        }
        if int8
        else None,
    }


def _share(us: float, total: float) -> float | None:
    return round(100.0 * us / total, 2) if total else None


def _by_op_type(
    nodes: list[NodeTime], *, int8: bool, runs: int, total: float, top: int
) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"us": 0.0, "nodes": set(), "kernels": set(), "fp32_nodes": set()}
    )
    for n in nodes:
        group = groups[n.op_type]
        group["us"] += n.total_us
        group["nodes"].add(n.node)
        group["kernels"].add(n.kernel)
        if int8 and runs_in_fp32(n):
            group["fp32_nodes"].add(n.node)
    ranked = sorted(groups.items(), key=lambda kv: -kv[1]["us"])
    ops = [
        {
            "op_type": op,
            "ms_per_run": g["us"] / runs / 1e3,
            "share_pct": _share(g["us"], total),
            "nodes": len(g["nodes"]),
            "kernels": sorted(g["kernels"]),
            "fp32_in_int8": len(g["fp32_nodes"]) if int8 else None,
        }
        for op, g in ranked[:top]
    ]
    rest = ranked[top:]
    if rest:
        rest_us = sum(g["us"] for _, g in rest)
        ops.append(
            {
                "op_type": f"(other: {len(rest)} types)",
                "ms_per_run": rest_us / runs / 1e3,
                "share_pct": _share(rest_us, total),
                "nodes": sum(len(g["nodes"]) for _, g in rest),
                "kernels": [],
                "fp32_in_int8": sum(len(g["fp32_nodes"]) for _, g in rest) if int8 else None,
            }
        )
    return ops


def _by_layer(
    nodes: list[NodeTime], *, int8: bool, runs: int, total: float
) -> list[dict[str, Any]]:
    per_node: dict[str, list[NodeTime]] = defaultdict(list)
    for n in nodes:
        per_node[n.node].append(n)
    layers = []
    for name, parts in per_node.items():
        us = sum(p.total_us for p in parts)
        main = max(parts, key=lambda p: p.total_us)
        layers.append(
            {
                "layer": name,
                "op_type": main.op_type,
                "kernel": main.kernel,
                "precision": node_precision(main),
                "ms_per_run": us / runs / 1e3,
                "share_pct": _share(us, total),
                "fp32_in_int8": bool(int8 and runs_in_fp32(main)),
            }
        )
    return sorted(layers, key=lambda r: -r["ms_per_run"])


def profile_pairs(
    pairs: list[tuple[type, Any]],
    *,
    device: str,
    threads: int,
    x: np.ndarray,
    runs: int = PROFILE_RUNS,
) -> list[dict[str, Any]]:
    """Profile each ONNX artifact × runtime on batch ``x`` (bench.json's ``profile``).

    Each pair is loaded afresh (a second, profiling session; the timed ones stay clean) and
    closed before the next. A runtime without a profiler, or one that cannot load, is an
    entry with ``status: skipped`` and the reason; any other failure ``status: error``.
    """
    out: list[dict[str, Any]] = []
    for cls, artifact in pairs:
        if artifact.format != "onnx":
            continue
        entry: dict[str, Any] = {
            "artifact": artifact.name,
            "runtime": cls.name,
            "precision": artifact.precision,
            "batch_size": int(x.shape[0]),
        }
        runtime = None
        try:
            runtime = cls(artifact, device, precision=artifact.precision, threads=threads)
            runtime.load()
            raw = runtime.profile(x, runs=runs)
            entry.update(status="ok", **group_profile(raw, int8=artifact.precision == "int8"))
        except RuntimeUnavailable as exc:
            entry.update(status="skipped", reason=str(exc))
        except (InputFileError, KeyboardInterrupt):
            raise  # a tampered artifact is the user's problem, never a footnote
        except Exception as exc:  # one runtime's profiler failing must not stop the others
            entry.update(status="error", reason=f"{exc.__class__.__name__}: {exc}")
        finally:
            close_quietly(runtime)
        out.append(entry)
    return out


# --- the profile in bench.md, the terminal and bench-profile.png ---------------------------


def profile_lines(profile: list[dict[str, Any]]) -> list[str]:
    """Markdown: per artifact × runtime, the top operator types with their share of time."""
    from exporter.core.report import markdown_table

    if not profile:
        return []
    lines = [
        "## Where the time goes (per-operator profile)",
        "",
        "Shares are of each runtime's own operator total (meaningful on a busy machine; "
        "the absolute times are not). In int8 artifacts, `fp32 in int8` counts the "
        "convolutions and matrix products that ran in fp32.",
        "",
    ]
    for entry in profile:
        head = f"### {entry['artifact']} on {entry['runtime']}, batch {entry['batch_size']}"
        if entry["status"] != "ok":
            lines += [head, "", f"{entry['status']}: {entry.get('reason')}", ""]
            continue
        fp32 = entry.get("fp32_in_int8")
        note = ""
        if fp32 is not None:
            note = (
                f"; {len(fp32['layers'])} layers ran in fp32 ({fp32['share_pct']:.1f}% of the "
                f"time): {', '.join(fp32['layers'][:6]) or 'none'}"
            )
        lines += [
            head,
            "",
            f"{entry['profiler']}, {entry['runs']} runs, operators "
            f"{entry['ops_ms_per_run']:.3f} ms/run{note}",
            "",
            markdown_table(
                entry["by_op_type"],
                [
                    ("op_type", "operator"),
                    ("share_pct", "share %"),
                    ("ms_per_run", "ms/run"),
                    ("nodes", "nodes"),
                    ("fp32_in_int8", "fp32 in int8"),
                ],
            ),
        ]
    return lines


def profile_summary(profile: list[dict[str, Any]]) -> list[str]:
    """One terminal line per artifact × runtime: the top operators and their shares."""
    out = []
    for e in profile:
        where = f"profile {e['artifact']} on {e['runtime']}"
        if e["status"] != "ok":
            out.append(f"{where}: {e['status']}: {e.get('reason')}")
            continue
        top = ", ".join(
            f"{op['op_type']} {op['share_pct'] or 0:.0f}%" for op in e["by_op_type"][:4]
        )
        fp32 = e.get("fp32_in_int8")
        extra = f"; fp32 in int8: {fp32['share_pct']:.0f}% of the time" if fp32 else ""
        out.append(f"{where}: {top}{extra}")
    return out


def plot_profile(profile: list[dict[str, Any]], dest: Path) -> None:
    """``bench-profile.png``: one bar chart per artifact × runtime, share per operator type."""
    from exporter.core.report import new_figure, save_png

    entries = [e for e in profile if e["status"] == "ok"]
    fig, axes = new_figure(nrows=max(len(entries), 1), size=(7.0, 2.8))
    if not entries:
        axes[0][0].text(0.5, 0.5, "no profile", ha="center", transform=axes[0][0].transAxes)
    for ax_row, entry in zip(axes, entries, strict=False):
        ax = ax_row[0]
        ops = list(reversed(entry["by_op_type"]))
        colors = [FP32_COLOR if op.get("fp32_in_int8") else OTHER_COLOR for op in ops]
        ax.barh([op["op_type"] for op in ops], [op["share_pct"] or 0 for op in ops], color=colors)
        ax.set(
            xlabel="share of operator time %",
            title=f"{entry['artifact']} on {entry['runtime']}, batch {entry['batch_size']}"
            + (" (red: ran in fp32)" if entry.get("fp32_in_int8") else ""),
        )
        ax.grid(True, axis="x", alpha=0.3)
    save_png(dest, fig)
