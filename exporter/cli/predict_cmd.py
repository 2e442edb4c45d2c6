"""``tlx predict RUN IMAGES...``: class names and probabilities from a run's verified artifact."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from exporter.cli.app import command, console, say, staged, table
from exporter.cli.options import build
from exporter.core.config import EngineConfig, PredictConfig
from exporter.core.errors import EXIT_USAGE

if TYPE_CHECKING:
    from exporter.serve.images import BadImage
    from exporter.serve.predict import PredictResult


def _printable(text: str) -> str:
    # A file name may hold newlines or terminal escapes; a message stays one plain line.
    return text if text.isprintable() else repr(text)


def predict_table(result: PredictResult) -> Table:
    # Text cells: names from the run or the file system are never read as rich markup.
    rows = (
        (Text(_printable(p.source)), Text(best), f"{prob:.4f}", Text(", ".join(rest)))
        for p in result.predictions
        for (best, prob), rest in [(p.top[0], [f"{c} {q:.3f}" for c, q in p.top[1:]])]
    )
    title = Text(f"tlx predict · {result.artifact} on {result.runtime}")
    return table(
        title, ("image", "class", "probability", "next"), rows, left=("image", "class", "next")
    )


@command("predict", PredictConfig, EngineConfig)
def predict_command(
    run: Annotated[Path, typer.Argument(help="The run folder (with manifest.json).")],
    images: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (searched recursively) or glob patterns; with --engine "
            "ray also .txt files listing paths or URIs (file://, http(s)://, s3://...), one a line."
        ),
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    **options: Any,
) -> None:
    """Classify images with the run's verified artifact (the preprocessing recorded at export).

    An unreadable image is one line on stderr naming it; the others are still predicted and
    the exit code is 2 at the end (0 with --skip-bad). Exit codes: 0 ok, 2 bad input,
    3 runtime unavailable.
    """
    from exporter.serve import predict as lib

    cfg, how = build(PredictConfig, options), build(EngineConfig, options)
    how.check(cfg.output)
    if how.engine == "ray":
        from exporter.serve.ray_predict import predict_ray

        kw = {"output": how.output_file, "address": how.ray_address, "progress": not quiet}
        ray = predict_ray(run, images, cfg, logits=how.logits, **kw)
        failed, predicted = len(ray.failures), ray.images - len(ray.failures)
        say(
            f"{ray.images} images ({predicted} predicted, {failed} failed) with {ray.artifact} "
            f"on {ray.actors} actor(s) x {ray.threads} thread(s): {ray.images_per_s:.1f} img/s "
            f"(first rows after {ray.first_rows_s:.1f} s: the actors' start); {ray.rows} rows "
            f"in {ray.output}; failures: {ray.failures_path}",
            err=True,
        )
        if failed and not cfg.skip_bad:
            say(*(f"error: {_printable(src)}: {why}" for src, why in ray.failures[:5]), err=True)
    else:

        def report_bad(bad: BadImage) -> None:
            what = "skipped" if cfg.skip_bad else "error:"
            say(f"{what} {_printable(bad.source)}: {bad.reason}", err=True)

        kw = {"on_error": report_bad, "keep_logits": how.logits}
        result = staged(lib.predict_images, run, images, cfg, quiet=quiet, **kw)
        if cfg.output == "json":
            typer.echo(lib.render_json(result))
        elif cfg.output == "csv":
            typer.echo(lib.render_csv(result, result.classes if how.logits else None), nl=False)
        elif result.predictions:
            console.print(predict_table(result))
        failed, predicted = len(result.bad), len(result.predictions)
    if lib.unreadable_fails(predicted, failed, skip_bad=cfg.skip_bad):
        raise typer.Exit(EXIT_USAGE)  # each unreadable image already had its error line
