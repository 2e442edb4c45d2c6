"""Typer options derived from the settings: each option is declared once, with
:func:`exporter.core.config.opt` next to the config field it sets.

``@config_options(BenchConfig)`` adds one keyword parameter per declared field (nested configs
such as ``TrainConfig.data`` included) to the command's signature, which is what Typer reads;
:func:`build` turns the parsed values back into the config, and :func:`command_line` turns them
back into a command line (torchrun's workers).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

import typer

from exporter.core.config.common import CLI, NESTED, Nested, Option

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")
PLAIN = (bool, int, float, str)


def declared(cls: type, view: Nested = Nested()) -> Iterator[tuple[Field[Any], Option, Any]]:
    """(field, its option, its type) for every field of ``cls`` (and of its nested configs)
    that has an option; a nested config's options as its ``view`` shows them."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        if _nested(f):
            yield from declared(f.default_factory, _view(f))  # type: ignore[arg-type]
        elif CLI in f.metadata and f.name not in view.skip:
            o = f.metadata[CLI]
            yield f, replace(o, help=view.prefix + view.help.get(f.name, o.help)), hints[f.name]


def _nested(f: Field[Any]) -> bool:
    return f.default_factory is not MISSING and is_dataclass(f.default_factory)


def _view(f: Field[Any]) -> Nested:
    return f.metadata.get(NESTED, Nested())


def _cli_type(f: Field[Any], o: Option, hint: Any) -> Any:
    if o.choices:
        words = Enum(f.name.title().replace("_", ""), [(c, c) for c in o.choices], type=str)
        return list[words] if get_origin(hint) is tuple else words  # type: ignore[valid-type]
    if o.path:
        return Path
    union = get_origin(hint) in (Union, types.UnionType)
    kinds = [a for a in get_args(hint) if a is not type(None)] if union else [hint]
    if o.parse is not None or (len(kinds) > 1 and str in kinds):
        return str  # the config reads the text (e.g. --prune 0.5 or auto)
    if len(kinds) != 1 or kinds[0] not in PLAIN:
        raise TypeError(f"{f.name}: {hint} needs parse= to be read from the command line")
    return kinds[0]


def _cli_default(o: Option, kind: Any, value: Any) -> Any:
    """The default as the command line gives it: an Enum member, or the text ``parse`` reads."""
    if value is None or value is MISSING:
        return value
    if o.choices and isinstance(value, tuple):  # a repeatable option: --format a --format b
        return [get_args(kind)[0](v) for v in value]
    if o.choices:
        return kind(value)
    if o.parse is not None:
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return value


def parameter(f: Field[Any], o: Option, hint: Any) -> inspect.Parameter:
    """The Typer option of one declared field."""
    kind = _cli_type(f, o, hint)
    default = _cli_default(o, kind, f.default)
    info = typer.Option(*o.flags, help=o.help, **o.extra)
    annotation = Annotated[kind | None if default is None else kind, info]
    default = inspect.Parameter.empty if default is MISSING else default
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


def config_options(*configs: type, extra: Sequence[inspect.Parameter] = ()) -> Callable[[F], F]:
    """Give the decorated command (``def cmd(run, ..., **options)``) an option for every
    declared field of ``configs`` and the ``extra`` ones, after its arguments and before its
    own options."""

    def wrap(func: F) -> F:
        own = inspect.signature(func, eval_str=True)
        mine = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if len(mine) == len(own.parameters) and (configs or extra):
            raise TypeError(f"{func.__name__} needs **options to take its derived options")
        derived = [parameter(*d) for cls in configs for d in declared(cls)] + list(extra)
        names = [p.name for p in mine + derived]
        if len(set(names)) != len(names):
            raise TypeError(f"{func.__name__}: an option is declared twice in {names}")
        # Arguments (RUN) first, then the settings, then the command's own options.
        params = [p for p in mine if p.default is p.empty] + derived
        params += [p.replace(kind=p.KEYWORD_ONLY) for p in mine if p.default is not p.empty]
        func.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        func.configs = configs  # type: ignore[attr-defined]
        return func

    return wrap


def value(o: Option, given: Any) -> Any:
    """A parsed option as the config field takes it: Enums as their word, paths as str."""
    if isinstance(given, Enum):
        return given.value
    if isinstance(given, list):
        return tuple(value(o, v) for v in given)
    if isinstance(given, Path):
        return str(given)
    if o.parse is not None and isinstance(given, str):
        return o.parse(given)
    return given


def build(cls: type[C], params: dict[str, Any], **fixed: Any) -> C:
    """The config ``cls`` from a command's parsed options (``fixed`` values win)."""
    return cls(**_kwargs(cls, params, skip=fixed), **fixed)


def _kwargs(cls: type, params: dict[str, Any], *, skip: Container[str]) -> dict[str, Any]:
    """The fields of ``cls`` that the command line sets, but those in ``skip`` (a nested
    config's skipped fields keep its default)."""
    kw: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        if _nested(f):
            sub: Any = f.default_factory
            kw[f.name] = sub(**_kwargs(sub, params, skip=_view(f).skip))
        elif CLI in f.metadata:
            kw[f.name] = value(f.metadata[CLI], params[f.name])
    return kw


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the option was given on the command line (or the environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def command_line(ctx: typer.Context, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The options given on this command line (not defaults), as a command line again."""
    out: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        if name in skip or param.param_type_name != "option" or not given(ctx, name):
            continue
        v = ctx.params[name]
        if param.is_flag:  # type: ignore[attr-defined]
            out += (param.opts if v else param.secondary_opts)[:1]  # type: ignore[attr-defined]
        elif v is not None:
            out += [param.opts[0], str(v.value if isinstance(v, Enum) else v)]
    return out
