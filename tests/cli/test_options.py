"""Each option is declared once, next to its config field, and the CLI is derived from it:
every declared field is an option of its command (and nothing else sets it), the CLI's
defaults are the config's, choices are the declared words, and one device rule holds."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import typer
from typer.testing import CliRunner

from exporter.cli import app
from exporter.cli.options import build, declared
from exporter.core import choices, config
from exporter.core.config.common import CLI
from exporter.core.errors import UsageError

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _callback(name: str) -> Any:
    return next(c.callback for c in app.registered_commands if c.name == name)


def _configs(name: str) -> tuple[type, ...]:
    return getattr(_callback(name), "configs", ())


def _own_names(name: str) -> set[str]:
    """The parameters a command's function declares itself (RUN, --quiet, --no-wait...)."""
    code = _callback(name).__code__
    return set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])


def test_every_declared_field_is_an_option_of_its_command_and_vice_versa() -> None:
    covered: set[type] = set()
    for name, command in COMMANDS.items():
        params = {p.name: p for p in command.params}
        fields_ = {f.name: o for cls in _configs(name) for f, o, _ in declared(cls)}
        own = (_own_names(name) | {"no_wait"}) & set(params)  # lock=True adds --no-wait
        assert set(params) == set(fields_) | own, name
        assert not set(fields_) & _own_names(name), f"{name}: an option written twice"
        for field_name, o in fields_.items():
            if o.flags:
                decls = [d for flag in o.flags for d in flag.split("/")]
                assert set(decls) == {*params[field_name].opts, *params[field_name].secondary_opts}
            assert params[field_name].help == o.help
        covered.update(cls for cls in _configs(name))
        covered.update(
            f.default_factory  # type: ignore[misc]
            for cls in _configs(name)
            for f in fields(cls)
            if is_dataclass(f.default_factory)
        )
    with_options = {
        cls
        for cls in vars(config).values()
        if is_dataclass(cls) and any(CLI in f.metadata for f in fields(cls))
    }
    # A config may reach its command as the base of another (ServeConfig(TritonConfig)).
    missing = {c for c in with_options if not any(issubclass(k, c) for k in covered)}
    assert not missing, missing


def test_export_offers_the_served_models_options_as_the_triton_formats() -> None:
    params = {p.name: p for p in COMMANDS["export"].params}
    assert _configs("export") == (config.ExportConfig,)
    assert "threads" not in params and "seed" not in params  # a repository's: the plan's
    assert params["model_name"].help == "triton: Name clients address the model by."
    assert params["instances"].help.startswith("triton: Model instances (instance_group")
    assert params["name"].opts == ["--k8s-name"] and params["storage_uri"].help.startswith("kserve")
    assert params["force"].opts == ["--force"] and not params["force"].secondary_opts


def _defaults(name: str) -> dict[str, Any]:
    return {p.name: p.default for p in COMMANDS[name].params}


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if _configs(n)))
def test_the_cli_defaults_are_the_configs_defaults(name: str) -> None:
    defaults = _defaults(name)
    for cls in _configs(name):
        assert build(cls, defaults) == cls(), name


def _choices(command: str, param: str) -> tuple[str, ...]:
    found = next(p for p in COMMANDS[command].params if p.name == param)
    words = found.type_descriptor.annotation
    words = get_args(words)[0] if get_origin(words) is list else words  # --format a --format b
    return tuple(member.value for member in words)


def test_cli_choices_are_built_from_the_declared_words() -> None:
    assert _choices("bench", "precision") == choices.BENCH_PRECISIONS
    assert _choices("export", "precision") == choices.EXPORT_PRECISIONS
    assert _choices("export", "exporter") == config.EXPORTER_CHOICES
    assert _choices("export", "formats") == (
        *config.EXPORT_FORMATS,
        config.TRITON,
        config.KSERVE,
        choices.ALL,
    )
    assert _choices("train", "device") == choices.TRAIN_DEVICES
    assert _choices("train", "source") == config.DATA_SOURCES
    assert _choices("train", "recipe") == config.RECIPES
    assert _choices("train", "optimizer") == config.OPTIMIZERS
    assert _choices("train", "augment") == config.AUGMENT_MODES
    assert _choices("train", "cache_features") == config.CACHE_MODES


DEVICE_CONFIGS = [
    config.BenchConfig,
    config.VerifyConfig,
    config.PredictConfig,
    config.ServeConfig,
    config.TritonConfig,
]


@pytest.mark.parametrize("cls", DEVICE_CONFIGS, ids=lambda c: c.__name__)
def test_one_device_rule(cls: type) -> None:
    for good in ("cpu", "cuda", "cuda:0", "cuda:1"):
        assert cls(device=good).device == good
    for bad in ("tpu", "cuda:x", "cuda:", "cudax", "CPU"):
        with pytest.raises(UsageError, match=r"--device '.*': choose cpu or cuda \(cuda:N"):
            cls(device=bad)
    assert choices.device_kind("cuda:3") == choices.CUDA


def test_no_augment_is_a_deprecated_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.cli import train_cmd

    seen: dict[str, Any] = {}
    monkeypatch.setattr(train_cmd, "_train_and_report", lambda cfg, **kw: seen.update(cfg=cfg))
    result = runner.invoke(app, ["train", "--data", "synthetic", "--no-augment", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "--no-augment is deprecated; use --augment off" in result.output
    assert seen["cfg"].data.augment == "off" and seen["cfg"].data.seed == 3
    assert "--no-augment" not in runner.invoke(app, ["train", "--help"]).output


def test_bench_server_is_a_deprecated_loadtest(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.cli import loadtest_cmd

    seen: dict[str, Any] = {}

    def fake(run: Path, cfg: config.LoadtestConfig, *, quiet: bool) -> None:
        seen.update(run=run, cfg=cfg, quiet=quiet)

    monkeypatch.setattr(loadtest_cmd, "run_and_print", fake)
    url = "http://127.0.0.1:9"
    result = runner.invoke(app, ["bench", "r", "--server", url, "--out", "o", "-q"])
    assert result.exit_code == 0, result.output
    assert "deprecated; use tlx loadtest RUN --server URL" in result.output
    assert seen == {
        "run": Path("r"),
        "cfg": config.LoadtestConfig(server=url, out_dir="o"),
        "quiet": True,
    }


def test_help_shows_real_defaults() -> None:
    out = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "Epochs to train.  [default: 10]" in out
    assert "[default: auto]" in out and "--momentum" in out
