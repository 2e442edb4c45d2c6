"""``tlx verify``: parity of every artifact against the eager reference; exit 1 on failure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import Quiet, command, report_table, say, staged
from exporter.cli.options import build
from exporter.core.config import VerifyConfig, VerifyTarget

if TYPE_CHECKING:
    from exporter.verify.result import ParityReport


# What fits an 80-column CI log; each candidate's reasons follow as one line (candidate_lines).
TERMINAL_KEYS = ("runtime", "artifact", "precision", "max_abs_error", "top1_agreement_pct")
TERMINAL_KEYS += ("result",)


def verify_table(report: ParityReport) -> Table:
    """One row per runtime × artifact: verify.md's table, the columns that fit a terminal."""
    from exporter.verify.report import COLUMNS, FORMATTERS, summary_rows

    title = f"tlx verify: {report.verdict.upper()}"
    cols = [c for c in COLUMNS if c[0] in TERMINAL_KEYS]
    left = ("runtime", "artifact", "precision", "result")
    out = report_table(title, summary_rows(report), cols, formatters=FORMATTERS, left=left)
    for names in out.columns[:2]:  # the runtime and file names stay whole
        names.no_wrap = True
    return out


@command("verify", VerifyConfig, VerifyTarget, lock=True)
def verify_command(
    run: Annotated[Path, typer.Argument(help="The run folder (with manifest.json from export).")],
    quiet: Quiet = False,
    **options: Any,
) -> Any:
    """Check every artifact computes what the trained model computes; exit 1 if not.

    Writes verify.json and verify.md into the run folder; with --server the candidate is the
    running server instead (verify-server.json/.md). Exit codes: 0 all pass, 1 a
    candidate failed, 2 bad input (including a hash mismatch), 3 a named runtime or the
    device is unavailable here (or fell back).
    """
    target = build(VerifyTarget, options)
    if target.public_key is not None:
        from exporter.sign.verification import verify_signature

        check = verify_signature(run, target.public_key)
        say(
            f"signature ok: the {len(check.digests)} signed files of {check.run_dir} match "
            f"{check.signature} (key {target.public_key}); no file was added"
        )
        return None
    from exporter.core.runlock import run_lock
    from exporter.verify.report import candidate_lines
    from exporter.verify.served import verify_server
    from exporter.verify.verify import verify_run

    cfg = build(VerifyConfig, options)
    # One lock for checking and reporting: no export may change the run in between.
    with run_lock(run, "verify"):
        if target.server is None:
            report = staged(verify_run, run, cfg, quiet=quiet, table=verify_table)
        else:
            kw = {"server": target.server, "model_name": target.model_name, "table": verify_table}
            report = staged(verify_server, run, cfg, quiet=quiet, **kw)
    json_path, md_path = report.files  # each stage writes its own report
    if not quiet:
        say(*(f"skipped {s['runtime']}: {s['reason']}" for s in report.skipped))
        say(*(f"note: {n}" for n in report.notes), f"wrote {json_path} and {md_path}")
    for line, passed in candidate_lines(report, quiet=quiet):
        say(line, err=not passed)
    return report
