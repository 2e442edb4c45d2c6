"""Generic report writers: JSON, Markdown tables, CSV and PNG figures, all written atomically.

Nothing here knows a command: callers hand in rows (a list of dicts) and the columns to show.
Every file goes through :mod:`exporter.core.fsio`, so a killed run never leaves half a report.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from exporter.core.fsio import write_json, write_text, write_with

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Progress = Callable[[str, float, float], None]
"""``progress(description, done, total)``: how every long library call reports progress.

``export_run``, ``verify_run``, ``optimize_run``, ``bench_run`` and ``run_demo`` take one; the
CLI draws it as a bar. (``fit`` reports richer :class:`~exporter.train.TrainEvent`s.)
"""

REPORT_SCHEMA_VERSION = 1

Column = str | tuple[str, str]
"""A column: a row key, or ``(key, header)`` when the header should read differently."""


def format_cell(value: Any, *, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant-ish decimals, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def cells(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    digits: int = 3,
    formatters: Mapping[str, Callable[[Any], str]] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """The headers and the cell texts of ``rows`` restricted to ``columns``: one table, as
    Markdown (:func:`markdown_table`) or on a terminal. A missing key is an empty cell;
    ``formatters`` turn a key's value into its cell text (else :func:`format_cell`)."""
    formatters = formatters or {}
    keys_headers = [(c, c) if isinstance(c, str) else c for c in columns]
    body = [
        [
            formatters[key](row.get(key))
            if key in formatters
            else format_cell(row.get(key), digits=digits)
            for key, _ in keys_headers
        ]
        for row in rows
    ]
    return [header for _, header in keys_headers], body


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    digits: int = 3,
    formatters: Mapping[str, Callable[[Any], str]] | None = None,
) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` restricted to ``columns`` (arguments as
    :func:`cells`)."""
    heads, body = cells(rows, columns, digits=digits, formatters=formatters)
    lines = [_line(heads), _line(["---"] * len(heads)), *(_line(row) for row in body)]
    return "\n".join(lines) + "\n"


def _line(texts: Sequence[str]) -> str:
    # A pipe would end the cell and a newline the row.
    return "| " + " | ".join(str(t).replace("|", "\\|").replace("\n", " ") for t in texts) + " |"


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of ``rows``, a column per key in first-seen order.

    Nested values (dicts, lists) are written as their ``str``; None as an empty field.
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buf.getvalue()


def write_csv(dest: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Atomically write ``rows`` as CSV (see :func:`rows_to_csv`)."""
    write_text(dest, rows_to_csv(rows))


def write_markdown(dest: str | os.PathLike[str], text: str) -> None:
    """Atomically write a Markdown document."""
    write_text(dest, text if text.endswith("\n") else text + "\n")


def write_report_json(dest: str | os.PathLike[str], report: Mapping[str, Any]) -> None:
    """Atomically write a JSON report; ``schema_version`` is put first when missing.

    NaN and infinity are refused (JSON has no such values): callers write None instead.
    """
    obj = dict(report)
    if "schema_version" not in obj:
        obj = {"schema_version": REPORT_SCHEMA_VERSION, **obj}
    write_json(dest, obj)


def new_figure(*, ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.0, 4.0)) -> Any:
    """A matplotlib ``(figure, axes)`` pair on the Agg backend (no display needed).

    Uses the object API (not pyplot) so nothing global is touched and figures are freed
    with their last reference.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows=nrows, ncols=ncols, squeeze=False)
    return fig, axes


def save_png(dest: str | os.PathLike[str], fig: Figure, *, dpi: int = 110) -> None:
    """Atomically save a matplotlib figure as PNG."""
    write_with(dest, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
