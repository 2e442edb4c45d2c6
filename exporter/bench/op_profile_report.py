"""The per-operator profile in bench.md (``## Where the time goes``) and ``bench-profile.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FP32_COLOR, OTHER_COLOR = "tab:red", "tab:blue"


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
