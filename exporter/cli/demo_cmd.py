"""``tlx demo``: train → export → optimize → verify → bench offline, then a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from exporter.cli.app import command, console, say, staged, table
from exporter.cli.options import build
from exporter.core.config import DemoConfig
from exporter.core.machine import machine_line

if TYPE_CHECKING:
    from exporter.demo import DemoResult


def print_summary(result: DemoResult) -> None:
    """Accuracy, parity verdicts, the variants, the recommended deployment, every file."""
    acc = result.val_accuracy
    total = sum(result.step_seconds.values())
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.step_seconds.items())
    console.print(f"[bold]tlx demo[/] finished in {total:.0f} s ({steps})", markup=True)
    # Random init: the head learns from a random frozen trunk (chance is 10%), which says
    # nothing about accuracy on real data with ImageNet weights.
    random = result.config.weights == "none"
    note = " (random-init trunk, synthetic data; chance is 10%)" if random else ""
    say(
        f"machine: {machine_line(result.bench.machine)}",
        f"validation accuracy: {'n/a' if acc is None else f'{100 * acc:.1f}%'}{note}",
    )
    rows = (
        (v["runtime"], v["artifact"], f"[{style}]{v['verdict']}[/]", v["why"] or "")
        for v in result.verdicts()
        for style in ["green" if v["verdict"] == "pass" else "red"]
    )
    cols = ("runtime", "artifact", "verdict", "why")
    console.print(table(f"parity: {result.verify.verdict.upper()}", cols, rows, left=4))
    say(*(f"not verified here: {s['runtime']}: {s['reason']}" for s in result.verify.skipped))
    for v in result.variants():  # what optimize shipped, and what its gate kept aside and why
        why = f" ({v['reason']})" if v["reason"] else ""
        say(f"optimize {v['variant']}: {v['status']} {v['artifact']}{why}")
    print_deployment(result)
    console.print(table("files", ("what", "path"), result.files.items(), left=2))


def print_deployment(result: DemoResult) -> None:
    """bench's recommendation per batch size, else the fastest runtime (not verified)."""
    if not result.recommendations:
        say(*(f"no recommendation: {note}" for note in result.bench.recommendation_notes))
        say(
            *(
                f"fastest at batch {b} (not verified): {f['runtime']} on {f['artifact']}, "
                f"{f['latency_ms_p50']:.2f} ms"
                for b, f in result.fastest().items()
            )
        )
        return
    cols = ("batch", "artifact", "runtime", "p50 ms", "x eager", "top-1 agree", "MB")
    rows = (
        (
            str(r["batch_size"]),
            r["artifact"],
            r["runtime"],
            f"{r['median_ms']:.2f}",
            "n/a" if r["speedup_vs_eager"] is None else f"{r['speedup_vs_eager']:.1f}x",
            "n/a" if r["top1_agreement_pct"] is None else f"{r['top1_agreement_pct']:.1f}%",
            f"{r['bytes'] / 1e6:.1f}",
        )
        for r in result.recommendations
    )
    title = "deploy this: fastest verified artifact x runtime (p50, this machine)"
    out = table(title, cols, rows, left=("artifact", "runtime"))
    # The artifact is what the user deploys: keep its name whole in a narrow terminal.
    out.columns[1].no_wrap = True
    console.print(out)


@command("demo", DemoConfig)
def demo_command(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar; the summary only.")
    ] = False,
    **options: Any,
) -> Any:
    """The whole product offline: train on synthetic data, export, optimize, verify, bench.

    Exits 1 when an artifact fails its parity gate.
    """
    import warnings

    from exporter.demo import run_demo

    # torch.jit.load's deprecation notice would interleave with the demo's own output.
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load")
    result = staged(run_demo, build(DemoConfig, options), quiet=quiet)
    print_summary(result)
    return result
