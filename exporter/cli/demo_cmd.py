"""``tlx demo``: train → export → optimize → verify → bench offline, then a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import app, cli_errors, console, exit_if_failed, progress_bar
from exporter.cli.options import build, config_options
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
    console.print(f"machine: {machine_line(result.bench.machine)}", markup=False)
    weights = result.config.weights
    # Random init: the head learns from a random frozen trunk (chance is 10%), which says
    # nothing about accuracy on real data with ImageNet weights.
    note = " (random-init trunk, synthetic data; chance is 10%)" if weights == "none" else ""
    console.print(
        f"validation accuracy: {'n/a' if acc is None else f'{100 * acc:.1f}%'}{note}",
        markup=False,
    )

    verdicts = Table(title=f"parity: {result.verify.verdict.upper()}")
    for col in ("runtime", "artifact", "verdict", "why"):
        verdicts.add_column(col)
    for v in result.verdicts():
        style = "green" if v["verdict"] == "pass" else "red"
        verdicts.add_row(v["runtime"], v["artifact"], f"[{style}]{v['verdict']}[/]", v["why"] or "")
    console.print(verdicts)
    for s in result.verify.skipped:
        console.print(f"not verified here: {s['runtime']}: {s['reason']}", markup=False)

    print_variants(result)
    print_deployment(result)

    files = Table(title="files")
    files.add_column("what")
    files.add_column("path")
    for what, path in result.files.items():
        files.add_row(what, path)
    console.print(files)


def print_variants(result: DemoResult) -> None:
    """What tlx optimize shipped, and what its gate kept aside and why."""
    for v in result.variants():
        why = f" ({v['reason']})" if v["reason"] else ""
        console.print(f"optimize {v['variant']}: {v['status']} {v['artifact']}{why}", markup=False)


def print_deployment(result: DemoResult) -> None:
    """bench's recommendation per batch size, else the fastest runtime (not verified)."""
    recs = result.recommendations
    if not recs:
        for note in result.bench.recommendation_notes:
            console.print(f"no recommendation: {note}", markup=False)
        fastest = result.fastest()
        for b, f in fastest.items():
            console.print(
                f"fastest at batch {b} (not verified): {f['runtime']} on {f['artifact']}, "
                f"{f['latency_ms_p50']:.2f} ms",
                markup=False,
            )
        return
    table = Table(title="deploy this: fastest verified artifact x runtime (p50, this machine)")
    cols = ("batch", "artifact", "runtime", "p50 ms", "x eager", "top-1 agree", "MB")
    for col in cols:
        # The artifact is what the user deploys: keep its name whole in a narrow terminal.
        table.add_column(
            col,
            justify="left" if col in ("artifact", "runtime") else "right",
            no_wrap=col == "artifact",
        )
    for r in recs:
        speed, agree = r["speedup_vs_eager"], r["top1_agreement_pct"]
        table.add_row(
            str(r["batch_size"]),
            r["artifact"],
            r["runtime"],
            f"{r['median_ms']:.2f}",
            "n/a" if speed is None else f"{speed:.1f}x",
            "n/a" if agree is None else f"{agree:.1f}%",
            f"{r['bytes'] / 1e6:.1f}",
        )
    console.print(table)


@app.command("demo")
@config_options(DemoConfig)
def demo_command(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar; the summary only.")
    ] = False,
    **options: Any,
) -> None:
    """The whole product offline: train on synthetic data, export, optimize, verify, bench.

    Exits 1 when an artifact fails its parity gate.
    """
    with cli_errors():
        import warnings

        from exporter.demo import run_demo

        # torch.jit.load's deprecation notice would interleave with the demo's own output.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load")

        with progress_bar(quiet=quiet) as progress:
            result = run_demo(build(DemoConfig, options), progress=progress)
        print_summary(result)
        exit_if_failed("demo", result.gate_failures)
