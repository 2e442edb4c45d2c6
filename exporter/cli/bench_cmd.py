"""``tlx bench``: latency and throughput of every runtime of a run, and the regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from exporter.cli.app import (
    NO_WAIT_HELP,
    Device,
    app,
    choice_enum,
    cli_errors,
    console,
    exit_if_failed,
    parse_batch_sizes,
    progress_bar,
    run_lock_policy,
)
from exporter.core.choices import ALL, BENCH_PRECISIONS
from exporter.core.config import BenchConfig

if TYPE_CHECKING:
    from exporter.bench.result import BenchReport

_DEFAULTS = BenchConfig()


Precision = choice_enum("Precision", BENCH_PRECISIONS)


def bench_table(report: BenchReport) -> Table:
    """The rich table printed after a bench: one row per runtime × batch size."""
    ref = report.config.reference_runtime
    table = Table(title=f"tlx bench ({report.config.device}, {report.config.precision})")
    headers = ["runtime", "artifact", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s (p50)"]
    for h in [*headers, f"x {ref}", "cold start s", "note"]:
        table.add_column(h, justify="left" if h in ("runtime", "artifact", "note") else "right")

    def num(v: float | None, fmt: str = "{:.2f}") -> str:
        return "" if v is None else fmt.format(v)

    for row in report.rows():
        table.add_row(
            row["runtime"],
            row["artifact"],
            "" if row["batch_size"] is None else str(row["batch_size"]),
            num(row.get("latency_ms_p50")),
            num(row.get("latency_ms_p90")),
            num(row.get("latency_ms_p99")),
            num(row.get("throughput_img_s"), "{:.1f}"),
            num(row.get(f"speedup_vs_{ref}"), "{:.2f}x"),
            num(row.get("cold_start_s")),
            row.get("error") or ("" if row["status"] == "ok" else row["status"]),
        )
    return table


@app.command("bench")
def bench_command(
    run: Annotated[Path, typer.Argument(help="The run folder (made by `tlx train`).")],
    runtimes: Annotated[
        str,
        typer.Option(
            help="Comma-separated runtimes, or 'all' (unavailable ones are skipped with the "
            "reason; a named one that cannot run here exits 3)."
        ),
    ] = ",".join(_DEFAULTS.runtimes),
    device: Annotated[Device, typer.Option(help="Where to run.")] = Device(_DEFAULTS.device),
    batch_sizes: Annotated[
        str, typer.Option(help="Comma-separated batch sizes, e.g. 1,8,32.")
    ] = ",".join(str(b) for b in _DEFAULTS.batch_sizes),
    precision: Annotated[
        Precision, typer.Option(help="Compute precision (bf16 is slow on CPUs without AMX).")
    ] = Precision(_DEFAULTS.precision),
    warmup: Annotated[
        int, typer.Option(help="Untimed iterations per runtime x batch.")
    ] = _DEFAULTS.warmup,
    iters: Annotated[
        int, typer.Option(help="Timed iterations per runtime x batch.")
    ] = _DEFAULTS.iters,
    min_time: Annotated[
        float | None,
        typer.Option(help="Instead of --iters: time each runtime x batch for at least S seconds."),
    ] = _DEFAULTS.min_time_s,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for torch and ONNX Runtime (default: the cores this process "
            "may use: affinity and cgroup quota; recorded)."
        ),
    ] = _DEFAULTS.threads,
    compare: Annotated[
        Path | None,
        typer.Option(help="A baseline bench.json: exit 1 when a runtime's p50 regressed."),
    ] = None,
    max_regression: Annotated[
        float,
        typer.Option(
            help="Allowed p50 slow-down in percent; it must also exceed the noise band "
            "max(p90 - p50) of both reports to fail."
        ),
    ] = _DEFAULTS.max_regression_pct,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for bench.json/.md/.csv/.png (default: the run folder)."),
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help=NO_WAIT_HELP)] = False,
    tf32: Annotated[
        bool,
        typer.Option(
            "--tf32/--no-tf32",
            help="CUDA fp32: allow TF32 matmuls/convolutions (rows say tf32) or time IEEE fp32.",
        ),
    ] = _DEFAULTS.tf32,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile",
            help="Also profile each ONNX artifact x runtime per operator (ORT's profiler, "
            "OpenVINO's counters): bench.md/json `profile` and bench-profile.png.",
        ),
    ] = _DEFAULTS.profile,
    profile_runs: Annotated[
        int, typer.Option(min=1, help="Profiled runs per artifact x runtime with --profile.")
    ] = _DEFAULTS.profile_runs,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no table.")
    ] = False,
    server: Annotated[
        str | None,
        typer.Option(
            help="Load-test this running server instead (KServe v2 URL); the defaults of "
            "`tlx loadtest`, which has every option."
        ),
    ] = None,
) -> None:
    """Measure latency percentiles, throughput and cold start of every runtime, interleaved."""
    if server is not None:
        from exporter.cli.loadtest_cmd import run_and_print
        from exporter.core.config import LoadtestConfig

        with cli_errors():
            cfg = LoadtestConfig(server=server, out_dir=str(out) if out else None)
            run_and_print(run, cfg, quiet=quiet)
        return
    with cli_errors(), run_lock_policy(no_wait):
        from exporter.bench.bench import bench_run
        from exporter.bench.op_profile_report import profile_summary
        from exporter.runtimes.selection import parse_runtimes

        names = parse_runtimes(runtimes)
        cfg = BenchConfig(
            runtimes=(ALL,) if names == ALL else tuple(names),
            device=device.value,
            batch_sizes=parse_batch_sizes(batch_sizes),
            precision=precision.value,
            warmup=warmup,
            iters=iters,
            min_time_s=min_time,
            threads=threads,
            compare=str(compare) if compare else None,
            max_regression_pct=max_regression,
            out_dir=str(out) if out else None,
            tf32=tf32,
            profile=profile,
            profile_runs=profile_runs,
        )
        with progress_bar(quiet=quiet) as progress:
            report = bench_run(run, cfg, progress=progress)
        if not quiet:
            console.print(bench_table(report))
            for s in report.skipped:
                console.print(f"skipped {s['runtime']}: {s['reason']}", markup=False)
            for line in profile_summary(report.profile or []):
                console.print(line, markup=False)
            if report.comparison:
                verdict = "passed" if report.comparison["passed"] else "FAILED"
                console.print(f"regression gate {verdict} against {cfg.compare}", markup=False)
        from exporter.bench.recommend import deploy_lines

        for line in deploy_lines(report.recommendations):
            console.print(line, markup=False)
        from exporter.core.runfolder import BENCH_JSON

        console.print(f"wrote {report.files.get(BENCH_JSON)}", markup=False)
        exit_if_failed("bench", report.gate_failures)
