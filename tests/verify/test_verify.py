"""Parity: tolerance profiles, the gate, verify_run on good and broken artifacts, localize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.config import VerifyConfig
from exporter.core.errors import IntegrityError, UsageError
from exporter.verify.tolerance import PROFILES, compare, profile_for
from exporter.verify.verify import verify_run


@pytest.fixture(scope="module")
def run_dir(exported_run: Path) -> Path:
    return exported_run


# --- tolerance -----------------------------------------------------------------------------


def test_compare_identical_passes_and_nan_is_counted() -> None:
    ref = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]], dtype=np.float32)
    ok = compare(ref, ref.copy(), PROFILES["fp32"])
    assert ok.max_abs_error == 0 and ok.top1_agreement == 1 and ok.worst_excess <= 0
    bad = ref.copy()
    bad[1, 2] = np.nan
    cmp = compare(ref, bad, PROFILES["fp32"])
    assert cmp.nonfinite_n == 1
    assert cmp.worst_excess == np.inf and cmp.min_cosine_similarity == -1.0


def test_top1_flip_outside_tolerance_disagrees_but_tie_agrees() -> None:
    tol = PROFILES["fp32"]
    ref = np.array([[1.0, 2.0], [1.0, 1.00001]], dtype=np.float32)
    cand = np.array([[2.5, 2.0], [1.00002, 1.0]], dtype=np.float32)
    cmp = compare(ref, cand, tol)
    # Row 0 flips by far more than tolerance; row 1 is a tie within numeric noise.
    assert cmp.top1_agreement == 0.5 and cmp.top1_ties_n == 1


def test_profiles_and_overrides() -> None:
    fp16 = profile_for("fp16")
    ref = np.array([[40.0, -3.0]])
    assert fp16.effective_atol(ref) == pytest.approx(5e-2 * 40)  # scaled by logit size
    assert profile_for("int8").atol is None and profile_for("int8").min_top1 == 0.99
    custom = profile_for("fp16", atol=0.3, rtol=0.0, min_top1=0.5)
    assert (custom.atol, custom.atol_scaled, custom.rtol, custom.min_top1) == (0.3, False, 0, 0.5)
    with pytest.raises(UsageError, match="--min-top1"):
        profile_for("fp32", min_top1=99.0)
    with pytest.raises(UsageError, match="--atol"):
        profile_for("fp32", atol=-1.0)
    with pytest.raises(UsageError, match="precision"):
        profile_for("fp8")


# --- verify_run ----------------------------------------------------------------------------

CPU_NAMES = ("eager", "torchscript", "pt2", "ort-cpu")


def test_fresh_export_passes_on_every_cpu_runtime(
    run_dir: Path, tmp_path: Path, copy_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.core.fsio as fsio
    import exporter.core.manifest as manifest
    import exporter.core.onnx_safety as onnx_safety

    run = copy_run(run_dir, tmp_path / "run", ("model.onnx", "model.ts", "model.pt2"))
    hashed: list[str] = []
    real_sha256 = fsio.sha256_file

    def counting_sha256(p: Path, **kwargs: int) -> str:
        hashed.append(Path(p).name)
        return real_sha256(p, **kwargs)

    read: list[str] = []
    real_read_text = Path.read_text
    parsed: list[str] = []
    real_parse = onnx_safety.load_onnx_graph
    monkeypatch.setattr(fsio, "sha256_file", counting_sha256)
    monkeypatch.setattr(manifest, "sha256_file", counting_sha256)
    monkeypatch.setattr(
        Path, "read_text", lambda p, *a, **k: read.append(p.name) or real_read_text(p, *a, **k)
    )
    monkeypatch.setattr(
        onnx_safety, "load_onnx_graph", lambda p: parsed.append(Path(p).name) or real_parse(p)
    )
    cfg = VerifyConfig(runtimes=CPU_NAMES, samples=8, batch_sizes=(1, 3, 4))
    report = verify_run(run, cfg)
    # The run is opened once and passed down: each file is hashed once, train.json and the
    # manifest are read once and the ONNX file is parsed once, however many runtimes (and
    # the reference, and the eager candidate's load) use them.
    assert sorted(hashed) == ["model.onnx", "model.pt2", "model.safetensors", "model.ts"]
    assert read.count("train.json") == 1 and read.count("manifest.json") == 1
    assert parsed == ["model.onnx"]
    assert [c.runtime for c in report.candidates] == list(CPU_NAMES)
    for c in report.candidates:
        assert c.passed, (c.runtime, c.failures)
        assert c.overall["top1_agreement_pct"] == 100.0
        assert c.overall["max_abs_error"] <= 1e-4
        assert c.overall["n"] == 1 + 3 + 4 + 8
        assert c.accuracy_candidate_pct == c.accuracy_reference_pct
    assert set(report.candidates[0].per_input) == {"random_b1", "random_b3", "random_b4", "heldout"}
    # A library call writes its own report, so the choice of what to ship sees the verdict.
    assert report.files == [run / "verify.json", run / "verify.md"]
    from exporter.serve.choice import choose

    assert choose(run).reason == "passed tlx verify on cpu"
    d = report.to_dict()
    assert d["schema_version"] == 1 and d["verdict"] == "pass"
    assert d["environment"]["torch"] and d["config"]["batch_sizes"] == (1, 3, 4)
    assert "PASS" in (run / "verify.md").read_text()
    assert isinstance(d["machine"]["cpus_available"], int) and isinstance(d["machine"]["isa"], list)
    assert "Machine: " in (run / "verify.md").read_text()


def test_perturbed_torchscript_localizes_to_classifier(
    run_dir: Path, tmp_path: Path, copy_run, rehash
) -> None:
    import torch

    run = copy_run(run_dir, tmp_path / "run", ("model.ts",))
    module = torch.jit.load(str(run / "model.ts"))
    with torch.no_grad():
        getattr(module.classifier, "3").weight[:, :64] *= 3.0
    (run / "model.ts").unlink()  # a link to the shared export: not in place
    module.save(str(run / "model.ts"))
    rehash(run, "model.ts")
    report = verify_run(run, VerifyConfig(runtimes=("torchscript",), samples=0, localize=True))
    (cand,) = report.candidates
    assert not cand.passed and cand.localization["layer"] == "classifier.3"


def test_artifact_from_another_run_fails(
    run_dir: Path, tmp_path: Path, copy_run, rehash, make_run_folder
) -> None:
    import onnx
    from onnx import numpy_helper
    from safetensors.torch import load_file

    # Another run's model.onnx: the same graph with another run's (seed 1) weights in it,
    # what exporting that run would give (its initializers carry the state-dict names).
    # Seed 1's weights are built once a session (the optimize tests use them too).
    other_run = make_run_folder(tmp_path / "other", seed=1)
    other = load_file(str(other_run / "model.safetensors"))
    run = copy_run(run_dir, tmp_path / "run", ("model.onnx",))
    model = onnx.load(str(run / "model.onnx"))
    swapped = 0
    for init in model.graph.initializer:
        if init.name in other:
            init.CopyFrom(numpy_helper.from_array(other[init.name].numpy(), init.name))
            swapped += 1
    assert swapped >= 16, "the exporter no longer names initializers after the state dict"
    (run / "model.onnx").unlink()  # may be a link to a shared export: not in place
    onnx.save(model, str(run / "model.onnx"))
    rehash(run, "model.onnx")
    report = verify_run(run, VerifyConfig(runtimes=("ort-cpu",), samples=4, batch_sizes=(2,)))
    (cand,) = report.candidates
    assert not cand.passed and cand.overall["max_abs_error"] > 1e-3


def test_hash_mismatch_is_refused_before_any_load(
    run_dir: Path, tmp_path: Path, copy_run, own
) -> None:
    run = copy_run(run_dir, tmp_path / "run", ("model.onnx",))
    with open(own(run / "model.onnx"), "r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"0123456789")
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        verify_run(run, VerifyConfig(runtimes=("ort-cpu",), samples=0))
    assert not (run / "verify.json").exists()


def test_runtime_error_is_recorded_and_others_continue(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_run
) -> None:
    from exporter.runtimes.pt2 import ExportedProgramRuntime

    def broken(self, x):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(ExportedProgramRuntime, "infer", broken)
    run = copy_run(run_dir, tmp_path / "run", ("model.pt2",))
    report = verify_run(run, VerifyConfig(runtimes=("pt2", "eager"), samples=0))
    pt2, eager = report.candidates
    assert pt2.error and "kernel exploded" in pt2.error and not pt2.passed
    assert eager.passed and report.verdict == "fail"


# --- property test -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(run_dir: Path):
    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model
    from exporter.runtimes import REGISTRY
    from exporter.runtimes.selection import artifacts_of_run

    arts = {a.format: a for a in artifacts_of_run(run_dir)}
    runtimes = {
        "eager": REGISTRY["eager"](arts["safetensors"], "cpu"),
        "torchscript": REGISTRY["torchscript"](arts["torchscript"], "cpu"),
        "ort-cpu": REGISTRY["ort-cpu"](arts["onnx"], "cpu"),
    }
    for rt in runtimes.values():
        rt.load()
    yield load_reference_model(open_run(run_dir)), runtimes
    for rt in runtimes.values():
        rt.close()


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.integers(min_value=1, max_value=5),
    scale=st.sampled_from([1e-3, 0.1, 1.0, 10.0, 100.0]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_property_runtimes_agree_over_inputs(loaded, batch: int, scale: float, seed: int) -> None:
    import torch

    reference, runtimes = loaded
    x = (np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)) * scale).astype(np.float32)
    with torch.inference_mode():
        want = reference(torch.from_numpy(x)).numpy()
    for name, rt in runtimes.items():
        cmp = compare(want, rt.infer(x), PROFILES["fp32"])
        assert cmp.nonfinite_n == 0, name
        assert cmp.worst_excess <= 0, (name, cmp.max_abs_error)
        assert cmp.top1_agreement == 1.0, name


@pytest.mark.slow
def test_fp16_onnx_passes_under_fp16_profile_but_not_fp32(
    run_dir: Path, tmp_path: Path, copy_run
) -> None:
    from exporter.core.config import ExportConfig
    from exporter.export.export import export_run

    run = copy_run(run_dir, tmp_path / "run", ())
    export_run(run, ExportConfig(formats=("onnx",), precision="fp16"))
    report = verify_run(run, VerifyConfig(runtimes=("ort-cpu",), samples=8))
    (cand,) = report.candidates
    assert cand.precision == "fp16" and cand.tolerance["atol_scaled"] and cand.passed
    strict = verify_run(run, VerifyConfig(runtimes=("ort-cpu",), samples=0, atol=1e-7, rtol=0))
    assert not strict.candidates[0].passed  # fp16 rounding is visible at fp32 tolerances


def test_perturbed_pt2_localizes_through_unflatten(
    run_dir: Path, tmp_path: Path, copy_run, rehash
) -> None:
    import torch

    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model
    from exporter.runtimes.selection import artifacts_of_run
    from exporter.verify.localize import localize_divergence

    run = copy_run(run_dir, tmp_path / "run", ("model.pt2",))
    model = load_reference_model(open_run(run))
    with torch.no_grad():
        model.features[28].weight[0] *= 4.0
    example = torch.randn(2, 3, 32, 32)
    (run / "model.pt2").unlink()  # a link to the shared export: not in place
    torch.export.save(torch.export.export(model, (example,)), str(run / "model.pt2"))
    rehash(run, "model.pt2")
    art = next(a for a in artifacts_of_run(run) if a.format == "pt2")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    found = localize_divergence(load_reference_model(open_run(run)), art, x, PROFILES["fp32"])
    assert found["layer"] == "features.28", found["reason"]
    compared = [row["layer"] for row in found["layers"] if not row["diverged"]]
    assert compared[:3] == ["features.0", "features.1", "features.2"]
