"""``tlx demo``: train → export → optimize → verify → bench offline, then a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from exporter.cli.app import command, console, say, staged, table
from exporter.cli.options import build
from exporter.cli.verify_cmd import verify_table
from exporter.core.config import DemoConfig
from exporter.core.machine import machine_line

if TYPE_CHECKING:
    from exporter.demo import DemoResult


def print_summary(result: DemoResult) -> None:
    """Accuracy, parity verdicts, the variants, the recommended deployment, every file."""
    from exporter.bench.recommend import deploy_lines
    from exporter.verify.report import candidate_lines

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
    console.print(verify_table(result.verify))
    say(*(line for line, _ in candidate_lines(result.verify, quiet=True)))  # failures' reasons
    say(*(f"not verified here: {s['runtime']}: {s['reason']}" for s in result.verify.skipped))
    for v in result.variants():  # what optimize shipped, and what its gate kept aside and why
        why = f" ({v['reason']})" if v["reason"] else ""
        say(f"optimize {v['variant']}: {v['status']} {v['artifact']}{why}")
    say(*deploy_lines(result.bench))  # else why not, and the fastest runtime (not verified)
    console.print(table("files", ("what", "path"), result.files.items(), left=2))


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
