"""What every command's settings share: the artifacts folder, the batch bound, ``to_dict``, and
:func:`opt`, which declares a field's command-line option next to the field itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

from exporter.core.errors import UsageError

DEFAULT_ARTIFACTS_DIR = "artifacts"
# Largest batch any command accepts: 65,536 images of 224 px are already 39 GB of input.
MAX_BATCH_SIZE = 65536
CLI = "cli"  # the key of a field's Option in its metadata
NESTED = "nested"  # the key of a nested config field's Nested in its metadata
PUBLIC_KEY_HELP = (
    "PEM public key: the run folder must match its model.sig (made by `tlx sign`) before any "
    "file is loaded; a changed, added or removed file exits 2 naming it."
)
RUNTIMES_HELP = (
    "Comma-separated runtimes, or 'all' (unavailable ones are skipped with the reason; a named "
    "one that cannot run here exits 3)."
)


@dataclass(frozen=True)
class Option:
    """How one config field appears on the command line (``exporter/cli/options.py`` builds
    the Typer option from it and turns the parsed value back into the field's value)."""

    help: str
    # The option's names, e.g. ("--quiet", "-q") or ("--amp/--no-amp",); empty: Typer's
    # default, --field-name (--x/--no-x for a bool).
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()  # the words it accepts (a choice list in --help)
    # Turns the text given on the command line into the field's value (lists such as 1,8,32);
    # the default is shown as that text.
    parse: Callable[[str], Any] | None = None
    path: bool = False  # the value is a file or folder (shown as PATH, kept as a str)
    extra: Mapping[str, Any] = field(default_factory=dict)  # typer.Option as is: min, hidden...


def opt(
    default: Any = MISSING,
    *,
    help: str,
    flags: tuple[str, ...] = (),
    choices: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
    path: bool = False,
    **extra: Any,
) -> Any:
    """A dataclass field with its command-line option: the one place an option is declared."""
    meta = {CLI: Option(help, flags, choices, parse, path, extra)}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Nested:
    """How a nested config's options appear on the command that holds it (``tlx export``
    offers the served model's options as the ``triton`` format's)."""

    prefix: str = ""  # put before each option's help ("triton: ": what the option applies to)
    skip: tuple[str, ...] = ()  # fields the command does not offer: they keep their default
    help: Mapping[str, str] = field(default_factory=dict)  # per-field help used instead here


def nested(*, prefix: str = "", skip: tuple[str, ...] = (), **help: str) -> dict[str, Nested]:
    """The metadata of a nested config's field: how the command offers its options (with
    ``prefix``, without ``skip``, with ``help`` overrides)."""
    return {NESTED: Nested(prefix, skip, help)}


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (paths as strings)."""
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in asdict(cfg).items()}


def check_int(option: str, value: int, limit: int) -> None:
    """A positive int no larger than ``limit`` (bools are refused too)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise UsageError(f"{option} {value!r}: give an integer from 1 to {limit}")


def parse_ints(text: str, option: str, example: str) -> tuple[int, ...]:
    """``"1,2,4"`` → ``(1, 2, 4)``; anything else is a usage error naming the option."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values:
        raise UsageError(f"{option} {text!r}: give integers separated by commas, e.g. {example}")
    return values


def parse_batch_sizes(text: str, option: str = "--batch-sizes", example: str = "1,8,32") -> Any:
    """``"1,8,32"`` → ``(1, 8, 32)``: positive, and no larger than :data:`MAX_BATCH_SIZE`.

    Larger sizes are refused up front: their input buffers alone would not fit in memory, and
    failing after minutes of loading helps nobody.
    """
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(b < 1 for b in sizes):
        raise UsageError(
            f"{option} {text!r}: give positive integers separated by commas, e.g. {example}"
        )
    if max(sizes) > MAX_BATCH_SIZE:
        raise UsageError(f"{option} {text!r}: batch sizes above {MAX_BATCH_SIZE} are not supported")
    return sizes


def parse_names(text: str) -> tuple[str, ...]:
    """``"a, b"`` → ``("a", "b")`` (names are checked by the config or the registry)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
