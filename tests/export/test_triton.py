"""``tlx export --format triton``: the repository, Triton's own config schema, the choice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb2
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.config import ExportConfig, TritonConfig
from exporter.core.errors import EXIT_ENV, EXIT_GATE, EXIT_OK, EXIT_USAGE, GateFailed
from exporter.core.fsio import sha256_file
from exporter.deploy.package import package_run
from exporter.deploy.triton_config import (
    ModelSpec,
    Tensor,
    parse_config,
    quote,
    render_config,
    tensors_from_manifest,
)


def invoke(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def _parse(path: Path):
    return text_format.Parse(path.read_text(), pb2.ModelConfig())


@pytest.fixture(scope="module")
def repo_run(onnx_run: Path, module_tmp: Path, link_run) -> Path:
    run = link_run(onnx_run, module_tmp / "run")
    result = invoke(str(run), "--format", "triton", "--max-batch", "16", "--instances", "2")
    assert result.exit_code == EXIT_OK, result.stderr
    assert "tritonserver --model-repository=" in result.stdout
    return run


def test_repository_layout_and_manifest(repo_run: Path) -> None:
    model = repo_run / "triton" / "vgg16"
    assert sha256_file(model / "1" / "model.onnx") == sha256_file(repo_run / "model.onnx")
    entry = json.loads((repo_run / "manifest.json").read_text())["artifacts"]["triton/vgg16"]
    assert entry["format"] == "triton" and entry["source_artifact"] == "model.onnx"
    listed = {f["path"]: f["sha256"] for f in entry["files"]}
    assert set(listed) == {
        "triton/vgg16/1/model.onnx",
        "triton/vgg16/config.pbtxt",
        "triton/vgg16/labels.txt",
        "triton/vgg16/configs/cpu.pbtxt",
        "triton/vgg16/configs/gpu.pbtxt",
        "triton/README.md",
    }
    assert all(sha256_file(repo_run / p) == sha for p, sha in listed.items())
    readme = (repo_run / "triton" / "README.md").read_text()
    assert "docker run" in readme and "tritonserver --model-repository=/models" in readme
    assert "--model-config-name=gpu" in readme
    assert not list((repo_run / "triton").glob(".tlx-tmp-*"))
    report = json.loads((repo_run / "deploy.json").read_text())
    assert report["results"]["triton"]["source_artifact"] == "model.onnx"


def test_labels_match_the_classes(repo_run: Path) -> None:
    classes = json.loads((repo_run / "train.json").read_text())["dataset"]["class_names"]
    labels = (repo_run / "triton" / "vgg16" / "labels.txt").read_text().splitlines()
    assert labels == classes


@pytest.mark.parametrize("name", ["config.pbtxt", "configs/cpu.pbtxt", "configs/gpu.pbtxt"])
def test_configs_parse_with_tritons_schema(repo_run: Path, name: str) -> None:
    cfg = _parse(repo_run / "triton" / "vgg16" / name)
    assert cfg.name == "vgg16" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 16
    (inp,) = cfg.input
    (out,) = cfg.output
    assert (inp.name, pb2.DataType.Name(inp.data_type), list(inp.dims)) == (
        "input",
        "TYPE_FP32",
        [3, 32, 32],
    )
    assert (out.name, list(out.dims), out.label_filename) == ("logits", [10], "labels.txt")
    assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds
    assert [w.batch_size for w in cfg.model_warmup] == [1, 16]
    (group,) = cfg.instance_group
    assert group.count == 2
    gpu = name.endswith("gpu.pbtxt")
    assert group.kind == (
        pb2.ModelInstanceGroup.KIND_GPU if gpu else pb2.ModelInstanceGroup.KIND_CPU
    )
    accels = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert len(accels) == (1 if gpu else 0)
    if gpu:
        params = dict(accels[0].parameters)
        assert accels[0].name == "tensorrt" and params["precision_mode"] == "FP32"
        assert params["trt_engine_cache_enable"] == "1" and params["trt_engine_cache_path"]
        assert params["trt_profile_max_shapes"] == "input:16x3x32x32"
    assert not cfg.parameters  # nothing free-form (ultralytics #22111)


def test_existing_repository_needs_force(repo_run: Path) -> None:
    before = sha256_file(repo_run / "triton" / "vgg16" / "config.pbtxt")
    result = invoke(str(repo_run), "--format", "triton", "--max-batch", "4")
    assert result.exit_code == EXIT_USAGE and "--force" in result.stderr
    assert sha256_file(repo_run / "triton" / "vgg16" / "config.pbtxt") == before


def test_force_replaces_and_fixed_hw_variant_is_chosen(
    repo_run: Path, tmp_path: Path, link_run
) -> None:
    """A (copied) fold-int8 entry that passed verify on cpu: shipped with INT8 and fixed H×W."""
    import os

    from exporter.core.manifest import ArtifactEntry, FileRecord, load_manifest, save_manifest

    run = link_run(repo_run, tmp_path / "run")
    # A link, not a 537 MB copy: packaging reads its source, never writes into it.
    os.link(run / "model.onnx", run / "model.fold.int8.onnx")
    manifest = load_manifest(run)
    base = manifest.artifacts["model.onnx"]
    manifest.artifacts["model.fold.int8.onnx"] = ArtifactEntry(
        name="model.fold.int8.onnx",
        format="onnx",
        files=[FileRecord.of(run, "model.fold.int8.onnx")],
        precision="int8",
        variant="fold-int8",
        inputs=base.inputs,
        outputs=base.outputs,
        input_constraints={"fixed_hw": [32, 32]},
    )
    save_manifest(run, manifest)
    cands = [{"runtime": "ort-cpu", "artifact": "model.fold.int8.onnx", "passed": True}]
    (run / "verify.json").write_text(json.dumps({"config": {"device": "cpu"}, "candidates": cands}))
    result = package_run(run, ExportConfig(formats=("triton",), force=True))
    assert result.triton is not None and result.triton.source == "model.fold.int8.onnx"
    gpu = _parse(run / "triton" / "vgg16" / "configs" / "gpu.pbtxt")
    params = dict(gpu.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters)
    assert params["precision_mode"] == "INT8"
    assert list(gpu.input[0].dims) == [3, 32, 32]
    # --variant overrides the verified choice.
    package_run(
        run,
        ExportConfig(formats=("triton",), force=True, triton=TritonConfig(variant="model.onnx")),
    )
    entry = load_manifest(run).artifacts["triton/vgg16"]
    assert entry.extra["source_artifact"] == "model.onnx"


def test_schema_error_is_exit_1_and_nothing_written(
    onnx_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_run
) -> None:
    import exporter.deploy.triton as triton

    run = link_run(onnx_run, tmp_path / "run")
    real = triton.render_config
    monkeypatch.setattr(triton, "render_config", lambda spec, kind: real(spec, kind) + "oops {\n")
    result = invoke(str(run), "--format", "triton")
    assert result.exit_code == EXIT_GATE, result.stderr
    assert "model_config" in result.stderr
    assert not (run / "triton" / "vgg16").exists()
    assert "triton/vgg16" not in json.loads((run / "manifest.json").read_text())["artifacts"]


def test_missing_tritonclient_is_exit_3(
    onnx_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_run
) -> None:
    run = link_run(onnx_run, tmp_path / "run")
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    monkeypatch.delattr("tritonclient.grpc.model_config_pb2", raising=False)
    result = invoke(str(run), "--format", "triton")
    assert result.exit_code == EXIT_ENV, result.stderr
    assert "tritonclient" in result.stderr
    assert not (run / "triton" / "vgg16").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--variant", "../../etc/passwd"), "--variant"),
        (("--variant", "eager"), "onnx only"),
        (("--model-name", "../escape"), "--model-name"),
        (("--model-name", "a\nb"), "--model-name"),
        (("--max-batch", "0"), "--max-batch"),
        (("--instances", "0"), "--instances"),
        (("--device", "tpu"), "--device"),
    ],
)
def test_bad_triton_options_are_exit_2(repo_run: Path, args: tuple[str, ...], says: str) -> None:
    result = invoke(str(repo_run), "--format", "triton", "--force", *args)
    assert result.exit_code == EXIT_USAGE, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and says in errors[0]


def test_the_export_stage_leaves_packaging_to_the_deploy_step(onnx_run: Path) -> None:
    from exporter.core.errors import UsageError
    from exporter.export.export import export_run

    with pytest.raises(UsageError, match="package_run"):
        export_run(onnx_run, ExportConfig(formats=("triton",)))
    assert not (onnx_run / "triton").exists()


def test_run_without_artifacts_is_exit_2(run_folder: Path) -> None:
    result = invoke(str(run_folder), "--format", "triton")
    assert result.exit_code == EXIT_USAGE and "--format onnx" in result.stderr
    assert not (run_folder / "triton").exists()


def _spec(**kw) -> ModelSpec:
    base = dict(
        name="m",
        inputs=(Tensor("input", "TYPE_FP32", (3, 224, 224)),),
        outputs=(Tensor("logits", "TYPE_FP32", (1000,)),),
        max_batch_size=8,
        precision="fp16",
        instances=1,
        max_queue_delay_us=0,
    )
    base.update(kw)
    return ModelSpec(**base)


def test_dynamic_hw_fixed_hw_and_static_batch_signatures() -> None:
    entry = {
        "inputs": [{"name": "input", "shape": ["batch", 3, "h", "w"], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}],
    }
    ins, outs, batch = tensors_from_manifest(entry, fixed_hw=None)
    assert ins[0].dims == (3, -1, -1) and outs[0].dims == (10,) and batch is None
    ins, _, _ = tensors_from_manifest(entry, fixed_hw=(64, 64))
    assert ins[0].dims == (3, 64, 64)
    static = {k: [{**v[0], "shape": [4, *v[0]["shape"][1:]]}] for k, v in entry.items()}
    _, _, batch = tensors_from_manifest(static, fixed_hw=None)
    assert batch == 4
    cfg = parse_config(render_config(_spec(max_batch_size=0), "gpu"), where="t")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    params = dict(cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters)
    assert (
        params["precision_mode"] == "FP16" and params["trt_profile_min_shapes"] == "input:3x224x224"
    )


def test_hostile_names_cannot_break_the_config() -> None:
    cfg = parse_config(render_config(_spec(name='we"ird\\name'), "cpu"), where="t")
    assert cfg.name == 'we"ird\\name'
    with pytest.raises(Exception, match="printable"):
        quote("a\nb")
    with pytest.raises(GateFailed, match="schema"):
        parse_config("name: 'x'\nno_such_field: 1\n", where="t")


def _tampered_copy(repo_run: Path, tmp_path: Path) -> Path:
    """A copy of the exported run (the model files hard-linked) whose small files may change."""
    import os
    import shutil

    def link_big(src: str, dst: str) -> None:
        (os.link if os.path.getsize(src) > 1 << 20 else shutil.copy2)(src, dst)

    run = tmp_path / "run"
    shutil.copytree(repo_run, run, copy_function=link_big)
    return run


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-differs", "rehashed"])
def test_verify_refuses_reordered_labels(repo_run: Path, tmp_path: Path, rehash: bool) -> None:
    """A reordered labels.txt names the wrong class for every answer: verify exits 2, whether
    the manifest hash still tells (as inspect shows) or was forged to match."""
    from exporter.core.manifest import FileRecord, load_manifest, save_manifest

    run = _tampered_copy(repo_run, tmp_path)
    labels = run / "triton" / "vgg16" / "labels.txt"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    if rehash:
        manifest = load_manifest(run)
        entry = manifest.artifacts["triton/vgg16"]
        entry.files = [
            FileRecord.of(run, f.path) if f.path.endswith("labels.txt") else f for f in entry.files
        ]
        save_manifest(run, manifest)
    result = CliRunner().invoke(app, ["verify", str(run), "--runtimes", "ort-cpu"])
    assert result.exit_code == EXIT_USAGE, (result.exit_code, result.stderr)
    assert "labels.txt" in result.stderr and "Traceback" not in result.stderr
    assert not (run / "verify.json").exists()
    if rehash:
        assert "line 1" in result.stderr


def test_verify_refuses_an_edited_config(repo_run: Path, tmp_path: Path) -> None:
    run = _tampered_copy(repo_run, tmp_path)
    config = run / "triton" / "vgg16" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 16", "max_batch_size: 64"))
    result = CliRunner().invoke(app, ["verify", str(run), "--runtimes", "ort-cpu"])
    assert result.exit_code == EXIT_USAGE, (result.exit_code, result.stderr)
    assert "config.pbtxt" in result.stderr and "manifest" in result.stderr


def test_an_untouched_repository_passes_the_check(repo_run: Path) -> None:
    from exporter.core.runfolder import open_run
    from exporter.verify.triton_check import check_triton_repositories

    assert check_triton_repositories(open_run(repo_run)) == ["triton/vgg16"]
