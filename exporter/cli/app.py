"""The Typer app and the one place that turns library errors into messages and exit codes."""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console, ConsoleRenderable, RenderHook
from rich.table import Table
from typer.core import TyperCommand

from exporter import __version__
from exporter.cli.options import config_options
from exporter.core.errors import EXIT_GATE, EXIT_SIGINT, TlxError
from exporter.core.report import Column

EXIT_INTERNAL = 70  # a bug in tlx, not in the input (sysexits' EX_SOFTWARE)
F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

app = typer.Typer(
    name="tlx",
    help="Turn a pretrained VGG16 into verified, benchmarked production artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class _FoldTables(RenderHook):
    """Tables fold a long cell onto more lines instead of cutting it ("model.f…").

    Off a terminal (logs, CI) rich lays tables out in 80 columns, and its default overflow
    drops the end of any word wider than its column: file names and variant names became
    unreadable. Columns that ask for something else (``no_wrap``, another overflow) keep it.
    """

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        for item in renderables:
            for column in item.columns if isinstance(item, Table) else ():
                if column.overflow == "ellipsis" and not column.no_wrap:
                    column.overflow = "fold"
        return renderables


# Results go to stdout; progress, warnings and errors to stderr so pipes stay clean.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
for _console in (console, err_console):
    _console.push_render_hook(_FoldTables())

NO_WAIT_HELP = (
    "If another tlx command is changing this run, exit 3 naming its pid instead of waiting."
)
# `@command(..., lock=True)`: a command that changes a run; _Command applies it.
NO_WAIT = inspect.Parameter(
    "no_wait",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[bool, typer.Option("--no-wait", help=NO_WAIT_HELP)],
)
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table.")]


def say(*lines: str, err: bool = False) -> None:
    """Plain lines on stdout (stderr with ``err``): never markup, since names come from users
    and files, and never wrapped, so that logs keep one line per message."""
    for line in lines:
        (err_console if err else console).print(line, markup=False, soft_wrap=True)


def table(
    title: Any,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    left: int | Collection[str] = 1,
    **kw: Any,
) -> Table:
    """A results table: names left-aligned (the first ``left`` columns, or those named), numbers
    right; ``kw`` applies to every column (e.g. ``no_wrap``)."""
    out = Table(title=title)
    for i, col in enumerate(columns):
        text = i < left if isinstance(left, int) else col in left
        out.add_column(col, justify="left" if text else "right", **kw)
    for row in rows:
        out.add_row(*row)
    return out


def report_table(
    title: Any,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    formatters: Mapping[str, Callable[[Any], str]] | None = None,
    **kw: Any,
) -> Table:
    """:func:`table` of a report's rows and columns, the cells as its Markdown shows them."""
    from exporter.core.report import cells

    heads, body = cells(rows, columns, digits=2, formatters=formatters)
    return table(title, heads, body, **kw)


def deprecated(old: str, new: str) -> None:
    """One line on stderr for a switch kept for old scripts; it still works."""
    say(f"warning: {old} is deprecated; use {new}", err=True)


def debug_enabled() -> bool:
    return os.environ.get("TLX_DEBUG", "") not in ("", "0")


def fail(message: str, code: int) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    first_line = " ".join(str(message).split("\n")).strip()
    # The message is text, not markup: paths such as "[/__w/pytorch/...]" in a library's
    # error would otherwise be read as a closing tag and crash the error report itself.
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(first_line)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


class _Command(TyperCommand):
    """Every command's errors become their exit codes: TlxError's own, Ctrl-C 130, anything
    else an internal error, with no traceback unless ``--debug`` (or ``TLX_DEBUG=1``). Where
    the command has ``--no-wait``, that is the run lock's policy (wait with one line on stderr,
    or exit 3); the result it returns (typed ``Any``: Typer evaluates the annotation, and
    result types are imported lazily) exits 1 if it failed a gate, after the command printed
    it."""

    def invoke(self, ctx: typer.Context) -> None:
        from exporter.core.runlock import lock_policy

        def notify(message: str) -> None:
            say(f"note: {message} (--no-wait exits instead)", err=True)

        try:
            with contextlib.ExitStack() as policy:
                if "no_wait" in ctx.params:
                    wait = not ctx.params["no_wait"]
                    policy.enter_context(lock_policy(wait=wait, notify=notify))
                failures = getattr(super().invoke(ctx), "gate_failures", [])
            if failures:  # the one way a failed gate becomes exit 1, after the reports
                more = f" (+{len(failures) - 4} more)" if len(failures) > 4 else ""
                reasons = "; ".join(failures[:4]) + more
                raise fail(f"{self.name} failed the gate: {reasons}", EXIT_GATE)
        except typer.Exit:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            if debug_enabled():
                raise
            if isinstance(exc, TlxError):
                raise fail(str(exc), exc.exit_code) from None
            if isinstance(exc, KeyboardInterrupt):
                raise fail("interrupted", EXIT_SIGINT) from None
            raise fail(
                f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for the "
                "traceback and report it)",
                EXIT_INTERNAL,
            ) from None


def command(name: str, *configs: type, lock: bool = False) -> Callable[[F], F]:
    """Register ``tlx NAME`` with an option for every declared field of ``configs``
    (:func:`~exporter.cli.options.config_options`), ``--no-wait`` when it changes a run
    (``lock``), and errors mapped to exit codes."""

    def wrap(func: F) -> F:
        func = config_options(*configs, extra=(NO_WAIT,) if lock else ())(func)
        return app.command(name, cls=_Command)(func)

    return wrap


def staged(
    call: Callable[..., R],
    *args: Any,
    quiet: bool,
    table: Callable[[R], Table] | None = None,
    **kw: Any,
) -> R:
    """A stage's library call under a rich progress bar on stderr (none when quiet or off a
    terminal), then its ``table`` unless quiet."""
    if quiet or not sys.stderr.isatty():
        result = call(*args, progress=None, **kw)
    else:
        from rich import progress as rp

        with rp.Progress(
            rp.TextColumn("{task.description}"),
            rp.BarColumn(),
            rp.TextColumn("{task.percentage:>3.0f}%"),
            rp.TimeElapsedColumn(),
            rp.TextColumn("eta"),  # rich's estimate from the recent rate; "-:--:--" until known
            rp.TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("starting", total=1.0)

            def update(description: str, done: float, total: float) -> None:
                bar.update(task, description=description, completed=done, total=max(total, 1e-9))

            result = call(*args, progress=update, **kw)
    if table is not None and not quiet:
        console.print(table(result))
    return result


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tlx {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """tlx: train → export → verify → bench, each step measured.

    Exit codes: 0 ok, 1 gate failed, 2 bad usage or input, 3 environment (device/runtime
    unavailable), 70 internal error, 130/143 interrupted.
    """
    if debug:
        os.environ["TLX_DEBUG"] = "1"
