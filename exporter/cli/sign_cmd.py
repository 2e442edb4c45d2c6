"""``tlx sign``: provenance, model card and an OpenSSF model signature for a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from exporter.cli.app import command, say


@command("sign", lock=True)
def sign_command(
    run: Annotated[Path, typer.Argument(help="The run folder (with manifest.json from export).")],
    key: Annotated[
        Path,
        typer.Option(
            "--key", help="PEM elliptic-curve private key (P-256, P-384 or P-521) to sign with."
        ),
    ],
    **options: Any,  # --no-wait, which _Command applies
) -> None:
    """Sign the run's deployable files into RUN/model.sig (OpenSSF model-signing format).

    Checks every file against manifest.json first, then writes provenance.json (in-toto
    statement, SLSA provenance) and MODEL_CARD.md, which the signature covers too. Check it
    with `tlx verify RUN --public-key PUBLIC.pem`, `--public-key` on serve/predict, or the
    library's own `model_signing verify key`. Sign last: a later export, optimize, verify or
    bench changes signed files. Exit codes: 0 signed, 2 bad key or a file differs from the
    manifest, 3 the sign extra is not installed.
    """
    from exporter.sign.signing import sign_run

    result = sign_run(run, key)
    say(
        f"signed {result.files_signed} files of {result.run_dir} into {result.signature} "
        f"(also wrote {result.provenance.name} and {result.model_card.name}; unsigned: "
        f"{', '.join(result.unsigned)})"
    )
