"""Generic report writers: Markdown, CSV, JSON and PNG."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from exporter.core.report import (
    format_cell,
    markdown_table,
    new_figure,
    rows_to_csv,
    save_png,
    write_csv,
    write_report_json,
)

ROWS = [
    {"name": "a|b", "ms": 1.23456, "ok": True, "note": None},
    {"name": "c", "ms": 0.00001234, "ok": False, "extra": [1, 2]},
]


def test_markdown_table_columns_headers_and_escaping() -> None:
    md = markdown_table(ROWS, [("name", "runtime"), "ms", "ok", "note"], digits=2)
    lines = md.strip().splitlines()
    assert lines[0] == "| runtime | ms | ok | note |"
    assert lines[1] == "| --- | --- | --- | --- |"
    assert lines[2] == "| a\\|b | 1.23 | yes |  |"  # a pipe in a cell must not split it
    assert lines[3].startswith("| c | 1.2e-05 | no |")


def test_markdown_formatters_override() -> None:
    md = markdown_table(ROWS, ["ms"], formatters={"ms": lambda v: f"{v:.1f}x"})
    assert "| 1.2x |" in md


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (3, "3"), (2.0, "2.000"), (12345.6, "12,345.6"), (math.nan, "nan"), ("s", "s")],
)
def test_format_cell(value: object, text: str) -> None:
    assert format_cell(value) == text


def test_csv_round_trip_with_union_of_keys(tmp_path: Path) -> None:
    text = rows_to_csv(ROWS)
    assert text.splitlines()[0] == "name,ms,ok,note,extra"
    write_csv(tmp_path / "r.csv", ROWS)
    with (tmp_path / "r.csv").open() as fh:
        back = list(csv.DictReader(fh))
    assert back[0]["name"] == "a|b" and float(back[0]["ms"]) == pytest.approx(1.23456)
    assert back[0]["note"] == "" and back[1]["extra"] == "[1, 2]"


def test_json_report_gets_schema_version_first_and_refuses_nan(tmp_path: Path) -> None:
    write_report_json(tmp_path / "r.json", {"command": "x", "value_ms": 1.5})
    data = json.loads((tmp_path / "r.json").read_text())
    assert next(iter(data)) == "schema_version" and data["value_ms"] == 1.5
    with pytest.raises(ValueError):
        write_report_json(tmp_path / "bad.json", {"value_ms": math.nan})
    assert not (tmp_path / "bad.json").exists()  # atomic: nothing half-written


def test_png_written_and_decodable(tmp_path: Path) -> None:
    import matplotlib.image

    fig, axes = new_figure(ncols=2)
    axes[0][0].plot([1, 2, 3], [3, 1, 2])
    save_png(tmp_path / "f.png", fig)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(tmp_path / "f.png").ndim == 3
