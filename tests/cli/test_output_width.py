"""Output a person reads in a log: no cut file names at 80 columns, no CUDA noise on a CPU."""

from __future__ import annotations

import logging

from rich.table import Table

from exporter.cli.app import console


def test_tables_fold_long_file_names_instead_of_cutting_them() -> None:
    table = Table(title="files")
    for col in ("variant", "artifact", "status", "size MB", "p50 ms", "agree", "reason"):
        table.add_column(col)
    table.add_row("fold-int8", "model.fold-int8.onnx", "shipped", "135.2", "3.21", "100%", "")
    with console.capture() as captured:
        # Reading console.width returns the computed width; restoring that would pin it for
        # every later test (COLUMNS ignored): keep and restore rich's own setting instead.
        saved = console._width
        console.width = 80  # what rich uses off a TTY (logs, CI)
        try:
            console.print(table)
        finally:
            console._width = saved
    text = captured.get()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    cells = "".join(line.split("│")[2].strip() for line in text.splitlines() if "│" in line)
    assert "model.fold-int8.onnx" in cells  # folded across lines, every character kept


def test_cpu_compile_drops_only_the_no_cuda_runtime_note() -> None:
    from exporter.runtimes.compile import _QUIET_CPU

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("torch.utils.cpp_extension", logging.WARNING, "", 0, msg, (), None)

    assert not _QUIET_CPU.filter(record("No CUDA runtime is found, using CUDA_HOME='%s'"))
    assert _QUIET_CPU.filter(record("Error building extension"))
