"""tlx export: every format round-trips, matches eager, carries metadata, is hash-listed.

The session's exported run (tests/conftest.py: ``exported_run``, one ``export_run`` call for
every format: ONNX export of VGG16 takes several seconds, pt2 more) is read by most tests,
through a module copy whose model files are hard links; tests that must write their own
files use a fresh run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter.core.config import ExportConfig, parse_formats
from exporter.core.errors import GateFailed, InputFileError, UsageError
from exporter.core.fsio import TMP_PREFIX, sha256_file
from exporter.core.manifest import check_artifact, load_manifest
from exporter.export.export import export_run, resolve_opset
from exporter.export.metadata import METADATA_FILE, from_onnx_props

runner = CliRunner()


def _cli(*args: str):
    from exporter.cli import app

    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def exported(module_tmp: Path, exported_run_result, copy_run):
    """This module's copy of the session's exported run (the tests below add to it).

    The model files are hard links (tlx replaces files, never writes into them; a test that
    edits one in place calls own() first); the JSON files are this module's own.
    """
    src, result = exported_run_result
    run = copy_run(src, module_tmp / "run", tuple(r.name for r in result.formats.values()))
    shutil.copyfile(src / "export.json", run / "export.json")
    return run, result


@pytest.fixture(scope="module")
def eager(exported):
    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model

    return load_reference_model(open_run(exported[0]))


def _inputs(batch: int, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32), dtype=np.float32)


def _eager_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def test_export_result_lists_every_format(exported_run_result) -> None:
    run, result = exported_run_result  # the run that export_run wrote, read only
    assert set(result.formats) == {"onnx", "torchscript", "pt2"}
    for r in result.formats.values():
        assert r.path.is_file() and r.path.parent == run
        assert r.bytes == r.path.stat().st_size
        assert r.sha256 == sha256_file(r.path)
        assert r.max_abs_diff <= 1e-4
        assert r.export_time_s > 0
    assert not list(run.glob(TMP_PREFIX + "*")), "temp files left behind"


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_roundtrip_matches_eager(exported, eager, batch: int) -> None:
    import onnx
    import onnxruntime as ort

    run, _ = exported
    path = run / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    assert not list(run.glob("*.data")), "ONNX must be one self-contained file"
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert sess.get_inputs()[0].shape == ["batch", 3, 32, 32]
    x = _inputs(batch)
    (got,) = sess.run(["logits"], {"input": x})
    np.testing.assert_allclose(got, _eager_logits(eager, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_torchscript_roundtrip_matches_eager(exported, eager, batch: int) -> None:
    import torch

    run, _ = exported
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(str(run / "model.ts"), map_location="cpu", _extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["format"] == "torchscript"
    x = _inputs(batch)
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _eager_logits(eager, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_pt2_roundtrip_matches_eager(exported, eager, batch: int) -> None:
    import torch

    run, _ = exported
    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(run / "model.pt2"), extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["format"] == "pt2"
    x = _inputs(batch)
    with torch.inference_mode():
        got = program.module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _eager_logits(eager, x), atol=1e-4, rtol=0)


def _embedded_metadata(run: Path) -> dict[str, dict]:
    import onnx

    from exporter.export.inspection import read_archive_metadata

    model = onnx.load(str(run / "model.onnx"), load_external_data=False)
    return {
        "onnx": from_onnx_props({p.key: p.value for p in model.metadata_props}),
        "torchscript": read_archive_metadata(run / "model.ts"),
        "pt2": read_archive_metadata(run / "model.pt2"),
    }


def test_metadata_embedded_equals_the_run(exported) -> None:
    from exporter.core.runfolder import open_run

    run, _ = exported
    info = open_run(run)
    weights_sha = sha256_file(run / "model.safetensors")
    for fmt, meta in _embedded_metadata(run).items():
        assert meta["format"] == fmt
        assert meta["class_names"] == info.class_names
        assert meta["num_classes"] == 10
        assert meta["preprocessing"] == info.preprocessing.to_dict()
        assert meta["source_sha256"] == weights_sha
        assert meta["dataset"] == "synthetic"
        assert meta["best_val_accuracy"] == pytest.approx(0.1)
        assert meta["input_names"] == ["input"] and meta["output_names"] == ["logits"]
        assert meta["inputs"][0]["shape"] == ["batch", 3, 32, 32]
        assert meta["outputs"][0] == {"name": "logits", "shape": ["batch", 10], "dtype": "float32"}
        for key in ("torch_version", "torchvision_version", "onnx_version", "tlx_version"):
            assert meta[key], key
        assert meta["exported_at"].endswith("Z")
    onnx_meta = _embedded_metadata(run)["onnx"]
    assert onnx_meta["opset"] == resolve_opset(ExportConfig())
    assert onnx_meta["exporter"] == "torch.onnx.export(dynamo=True)"


def test_manifest_lists_every_file_with_correct_hash(exported) -> None:
    run, result = exported
    manifest = load_manifest(run)
    assert {"model.onnx", "model.ts", "model.pt2"} <= set(manifest.artifacts)
    assert manifest.source.sha256 == sha256_file(run / "model.safetensors")
    for name, entry in manifest.artifacts.items():
        for rec in entry.files:
            assert rec.sha256 == sha256_file(run / rec.path), name
            assert rec.bytes == (run / rec.path).stat().st_size
        check_artifact(run, entry)
    assert manifest.artifacts["model.onnx"].extra["opset"] == result.opset
    assert manifest.metadata["class_names"] == [f"class_{i}" for i in range(10)]


def test_export_report_has_config_environment_and_units(exported) -> None:
    run, _ = exported
    report = json.loads((run / "export.json").read_text())
    assert report["schema_version"] == 1
    assert report["config"]["formats"] == ["onnx", "torchscript", "pt2"]
    assert report["environment"]["torch"]
    res = report["results"]["onnx"]
    assert {"bytes", "export_time_s", "check_max_abs_diff", "sha256"} <= set(res)


def test_existing_artifact_without_force_is_exit_2(exported) -> None:
    run, _ = exported
    before = sha256_file(run / "model.onnx")
    out = _cli("export", run, "--format", "onnx")
    assert out.exit_code == 2
    assert "model.onnx already exists" in out.output and "--force" in out.output
    assert "Traceback" not in out.output
    assert sha256_file(run / "model.onnx") == before


def test_fp16_onnx_passes_its_tolerance_and_merges(exported, eager) -> None:
    import onnx
    import onnxruntime as ort

    run, _ = exported
    result = export_run(run, ExportConfig(formats=("onnx",), precision="fp16"))
    r = result.formats["onnx"]
    assert r.name == "model.fp16.onnx" and r.precision == "fp16"
    model = onnx.load(str(run / "model.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dtypes = [t.data_type for t in model.graph.initializer]
    assert onnx.TensorProto.FLOAT not in dtypes, "some weights stayed fp32"
    assert dtypes.count(onnx.TensorProto.FLOAT16) >= 16  # 13 conv + 3 linear weights
    # Much smaller than the fp32 file (the weights dominate).
    assert r.bytes < 0.6 * (run / "model.onnx").stat().st_size
    sess = ort.InferenceSession(str(run / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    x = _inputs(3)
    (got,) = sess.run(["logits"], {"input": x})
    ref = _eager_logits(eager, x)
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() <= 5e-2 + 1e-2 * np.abs(ref).max()
    manifest = load_manifest(run)
    # Merged: the fp32 artifacts of the first call are still listed.
    assert {"model.onnx", "model.ts", "model.pt2", "model.fp16.onnx"} <= set(manifest.artifacts)
    assert manifest.artifacts["model.fp16.onnx"].precision == "fp16"


def test_tampered_artifact_is_detected_by_inspect(exported, own) -> None:
    run, _ = exported
    path = own(run / "model.ts")  # a link to the session's file: edited in place below
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    try:
        out = _cli("inspect", path)
        assert out.exit_code == 2, out.output
        assert "model.ts" in out.output and "manifest" in out.output
        out = _cli("inspect", run)
        assert out.exit_code == 2
        assert "MISMATCH" in out.output
        assert "model.ts do not match manifest.json" in " ".join(out.output.split())
        out = _cli("inspect", run / "model.onnx")
        assert out.exit_code == 0, out.output
        assert "Conv" in out.output and "opset" in out.output
    finally:
        with open(path, "r+b") as fh:
            fh.seek(path.stat().st_size // 2)
            fh.write(byte)


def test_stale_manifest_entries_are_dropped(run_folder: Path) -> None:
    from exporter.core.manifest import ArtifactEntry, FileRecord, Manifest, save_manifest

    (run_folder / "old.onnx").write_bytes(b"x")
    save_manifest(
        run_folder,
        Manifest(
            source=FileRecord("model.safetensors", "0" * 64, 1),
            metadata={},
            artifacts={
                "old.onnx": ArtifactEntry(
                    "old.onnx", "onnx", [FileRecord.of(run_folder, "old.onnx")]
                )
            },
        ),
    )
    result = export_run(run_folder, ExportConfig(formats=("torchscript",)))
    assert result.dropped == ["old.onnx"]
    manifest = load_manifest(run_folder)
    assert set(manifest.artifacts) == {"model.ts"}
    assert manifest.source.sha256 == sha256_file(run_folder / "model.safetensors")


def test_failed_check_leaves_no_file(run_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import exporter.export.torch_export as et

    def fail(name, **_kw):
        raise GateFailed(f"{name}: simulated parity failure")

    monkeypatch.setattr(et, "check_logits", fail)
    out = _cli("export", run_folder, "--format", "torchscript")
    assert out.exit_code == 1
    assert "simulated parity failure" in out.output
    assert not (run_folder / "model.ts").exists()
    assert not list(run_folder.glob(TMP_PREFIX + "*"))


def test_legacy_exporter_failure_at_32px_is_a_clear_error(run_folder: Path) -> None:
    with pytest.raises(UsageError, match=r"legacy .*32x32 px.*--exporter dynamo"):
        export_run(run_folder, ExportConfig(formats=("onnx",), exporter="legacy"))
    assert not (run_folder / "model.onnx").exists()
    assert not list(run_folder.glob(TMP_PREFIX + "*"))


def test_wrong_weight_shapes_are_exit_2(run_folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    # A 5-class head (train.json says 10 classes): the run's own weights, head cut.
    state = load_file(str(run_folder / "model.safetensors"))
    for name in ("classifier.6.weight", "classifier.6.bias"):
        state[name] = state[name][:5].contiguous()
    (run_folder / "model.safetensors").unlink()  # linked to shared weights: not in place
    save_file(state, str(run_folder / "model.safetensors"))
    out = _cli("export", run_folder, "--format", "torchscript")
    assert out.exit_code == 2
    assert "classifier.6." in out.output and "shape" in out.output
    assert "Traceback" not in out.output
    assert not (run_folder / "model.ts").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--format", "bogus"), "bogus"),
        (("--opset", "7"), "--opset 7"),
        (("--batch-size", "0"), "--batch-size"),
    ],
)
def test_bad_options_are_exit_2(run_folder: Path, args: tuple[str, ...], needle: str) -> None:
    out = _cli("export", run_folder, *args)
    assert out.exit_code == 2
    assert needle in out.output
    assert "Traceback" not in out.output


def test_missing_and_corrupt_run_folder_are_exit_2(tmp_path: Path) -> None:
    out = _cli("export", tmp_path / "nope")
    assert out.exit_code == 2 and "does not exist" in out.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.json").write_text("{not json")
    out = _cli("export", bad)
    assert out.exit_code == 2 and "train.json" in out.output
    assert "Traceback" not in out.output


def test_parse_formats() -> None:
    assert parse_formats("all") == ("onnx", "torchscript", "pt2")
    assert parse_formats(("pt2", "onnx")) == ("onnx", "pt2")
    assert parse_formats("onnx,torchscript") == ("onnx", "torchscript")
    with pytest.raises(UsageError, match="'tflite' is unknown"):
        parse_formats("tflite")


def test_fp16_needs_onnx(run_folder: Path) -> None:
    with pytest.raises(UsageError, match="fp16 applies to ONNX only"):
        export_run(run_folder, ExportConfig(formats=("pt2",), precision="fp16"))


def test_unreadable_manifest_needs_force(run_folder: Path) -> None:
    (run_folder / "manifest.json").write_text("{broken")
    with pytest.raises(InputFileError, match=r"malformed.*--force"):
        export_run(run_folder, ExportConfig(formats=("torchscript",)))


@pytest.mark.slow
def test_static_batch_onnx_and_pt2(run_folder: Path) -> None:
    result = export_run(
        run_folder, ExportConfig(formats=("onnx", "pt2"), static_batch=True, batch_size=4)
    )
    for r in result.formats.values():
        assert r.batches_checked == (4,)
        assert r.metadata["inputs"][0]["shape"] == [4, 3, 32, 32]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_export_check_and_verify_reach_one_verdict(precision: str) -> None:
    # One judge: the post-write check accepts exactly what verify's gate accepts.
    from exporter.export.common import check_logits
    from exporter.verify.tolerance import PROFILES, compare, gate

    rng = np.random.default_rng(0)
    ref = rng.normal(scale=20.0, size=(8, 10)).astype(np.float32)
    tol = PROFILES[precision]
    for step in (0.5, 2.0):  # inside, then outside the (scaled) tolerance
        got = ref + step * (tol.effective_atol(ref) + tol.rtol * np.abs(ref))
        passed = gate(compare(ref, got, tol), tol).passed
        if passed:
            check_logits("m", got=got, ref=ref, precision=precision)
        else:
            with pytest.raises(GateFailed, match="beyond tolerance"):
                check_logits("m", got=got, ref=ref, precision=precision)
        assert passed == (step < 1)
