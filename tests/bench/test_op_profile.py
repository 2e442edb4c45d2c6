"""``tlx bench --profile``: grouping per operator and layer, fp32-in-int8 flags, skips."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from exporter.bench.bench import bench_run
from exporter.bench.op_profile import (
    group_profile,
    node_precision,
    profile_lines,
    profile_pairs,
    profile_summary,
)
from exporter.core.config import BenchConfig
from exporter.core.errors import RuntimeUnavailable
from exporter.core.runfolder import BENCH_PROFILE_PNG
from exporter.runtimes import REGISTRY, load_all
from exporter.runtimes.base import Artifact, Runtime
from exporter.runtimes.profiling import NodeTime, RawProfile, parse_ort_trace, sum_openvino_counters

CPU = "CPUExecutionProvider"


def test_grouping_by_op_type_and_layer_with_shares() -> None:
    raw = RawProfile(
        profiler="test",
        runs=2,
        nodes=[
            NodeTime("conv1", "QLinearConv", CPU, 400.0, 2),
            NodeTime("conv2", "Conv", CPU, 300.0, 2),  # left in fp32 by the quantizer
            NodeTime("fc", "Gemm", CPU, 200.0, 2),
            NodeTime("q", "QuantizeLinear", CPU, 100.0, 2),
        ],
    )
    g = group_profile(raw, int8=True)
    ops = {o["op_type"]: o for o in g["by_op_type"]}
    assert [o["op_type"] for o in g["by_op_type"]] == [
        "QLinearConv",
        "Conv",
        "Gemm",
        "QuantizeLinear",
    ]
    assert ops["QLinearConv"]["share_pct"] == 40.0 and ops["QLinearConv"]["ms_per_run"] == 0.2
    assert sum(o["share_pct"] for o in g["by_op_type"]) == pytest.approx(100.0)
    assert ops["QLinearConv"]["fp32_in_int8"] == 0
    assert ops["Conv"]["fp32_in_int8"] == 1 and ops["Gemm"]["fp32_in_int8"] == 1
    assert ops["QuantizeLinear"]["fp32_in_int8"] == 0  # not a compute operator
    assert [r["layer"] for r in g["by_layer"]] == ["conv1", "conv2", "fc", "q"]
    assert g["fp32_in_int8"] == {"layers": ["conv2", "fc"], "share_pct": 50.0}
    assert g["ops_ms_per_run"] == pytest.approx(0.5)
    # An fp32 artifact is not flagged, and a long tail is summed as "(other)".
    fp32 = group_profile(raw, int8=False, top_ops=2, top_layers=1)
    assert fp32["fp32_in_int8"] is None
    assert [o["op_type"] for o in fp32["by_op_type"]] == ["QLinearConv", "Conv", "(other: 2 types)"]
    assert fp32["by_op_type"][-1]["share_pct"] == 30.0 and len(fp32["by_layer"]) == 1


def test_openvino_kernels_tell_the_precision() -> None:
    def node(kernel: str, op: str = "Convolution") -> NodeTime:
        return NodeTime("n", op, kernel, 1.0, 1)

    assert node_precision(node("brgconv_avx512_I8")) == "int8"
    assert node_precision(node("jit_avx2_U8")) == "int8"
    assert node_precision(node("jit_avx2_FP32")) == "fp32"
    assert node_precision(node("brgemm_avx512_amx_BF16")) == "bf16"
    info = SimpleNamespace(
        node_name="conv",
        node_type="Convolution",
        exec_type="jit_avx2_FP32",
        real_time=timedelta(microseconds=50),
    )
    folded = SimpleNamespace(
        node_name="c", node_type="Const", exec_type="undef", real_time=timedelta(0)
    )
    raw = sum_openvino_counters([[info, folded], [info, folded]], runs=2)
    assert raw.nodes == [NodeTime("conv", "Convolution", "jit_avx2_FP32", 100.0, 2)]
    assert group_profile(raw, int8=True)["fp32_in_int8"]["layers"] == ["conv"]


def test_ort_trace_leaves_the_warmup_runs_out() -> None:
    def run(ts: int) -> dict[str, Any]:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 10}

    def node(ts: int, dur: int) -> dict[str, Any]:
        args = {"op_name": "Conv", "provider": CPU}
        return {"cat": "Node", "name": "conv_kernel_time", "ts": ts, "dur": dur, "args": args}

    events = [run(0), node(1, 999), run(100), node(101, 5), run(200), node(201, 7)]
    raw = parse_ort_trace(events, warmup=1, runs=2)
    assert raw.nodes == [NodeTime("conv", "Conv", CPU, 12.0, 2)] and raw.run_us == 20.0


# --- real profilers on a tiny ONNX file made here -----------------------------------------


def _tiny_onnx(folder: Path, *, int8: bool) -> Artifact:
    """Conv -> Relu -> Flatten -> Gemm at 8 px; int8: only the Conv quantized (QDQ, static)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((5, 4 * 8 * 8)).astype(np.float32), "fw"),
        numpy_helper.from_array(np.zeros(5, np.float32), "fb"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = folder / "tiny.onnx"
    onnx.save(model, str(path))
    if int8:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(
                    [{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}] * 4
                )

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        out = folder / "tiny.int8.onnx"
        quantize_static(
            str(path),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
        )
        path = out
    data = path.read_bytes()
    return Artifact(
        run_dir=folder,
        name=path.name,
        format="onnx",
        precision="int8" if int8 else "fp32",
        num_classes=5,
        image_size=8,
        files=((path.name, hashlib.sha256(data).hexdigest(), len(data)),),
    )


def _profilers() -> list[str]:
    load_all()
    names = ["ort-cpu"]
    if REGISTRY["openvino"].unavailable_reason("cpu") is None:
        names.append("openvino")
    return names


def test_real_profilers_flag_the_gemm_left_in_fp32(tmp_path: Path) -> None:
    artifact = _tiny_onnx(tmp_path, int8=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    names = _profilers()
    entries = profile_pairs(
        [(REGISTRY[n], artifact) for n in names], device="cpu", threads=1, x=x, runs=3
    )
    assert [e["runtime"] for e in entries] == names
    for e in entries:
        assert e["status"] == "ok", e
        assert sum(o["share_pct"] for o in e["by_op_type"]) == pytest.approx(100.0, abs=0.1)
        assert e["fp32_in_int8"]["layers"], e  # the Gemm was left in fp32 by the quantizer
    ort = entries[0]
    ops = {o["op_type"]: o for o in ort["by_op_type"]}
    assert "QLinearConv" in ops and ops["QLinearConv"]["fp32_in_int8"] == 0
    assert ort["fp32_in_int8"]["layers"] == ["fc"]
    assert any("fp32" in line for line in profile_summary(entries))


class NoProfiler(Runtime):
    """An ONNX runtime without a profiler (loads, never runs)."""

    name: ClassVar[str] = "no-profiler"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)

    def load(self) -> None:
        pass

    def prepare(self, x: np.ndarray) -> Any:
        return x

    def run(self, prepared: Any) -> Any:
        return prepared

    def to_numpy(self, output: Any) -> np.ndarray:
        return output


class Missing(NoProfiler):
    name: ClassVar[str] = "missing"

    def load(self) -> None:
        raise RuntimeUnavailable("missing needs the missing package: pip install missing")


def test_missing_profiler_is_skipped_with_its_reason(tmp_path: Path) -> None:
    artifact = _tiny_onnx(tmp_path, int8=False)
    x = np.zeros((1, 3, 8, 8), np.float32)
    entries = profile_pairs(
        [(NoProfiler, artifact), (Missing, artifact)], device="cpu", threads=1, x=x, runs=1
    )
    assert [(e["runtime"], e["status"]) for e in entries] == [
        ("no-profiler", "skipped"),
        ("missing", "skipped"),
    ]
    assert "no per-operator profiler" in entries[0]["reason"]
    assert "pip install missing" in entries[1]["reason"]
    md = "\n".join(profile_lines(entries))
    assert "skipped: no-profiler has no per-operator profiler" in md


def test_bench_profile_writes_json_markdown_and_plot(onnx_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = BenchConfig(
        runtimes=("ort-cpu",),
        batch_sizes=(1,),
        warmup=1,
        iters=2,
        iters_per_round=2,
        threads=1,
        out_dir=str(out),
        profile=True,
        profile_runs=2,
    )
    report = bench_run(onnx_run, cfg)
    data = json.loads((out / "bench.json").read_text())
    (entry,) = data["profile"]
    assert (entry["artifact"], entry["runtime"], entry["status"]) == ("model.onnx", "ort-cpu", "ok")
    top = entry["by_op_type"][0]
    assert top["op_type"] in {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul"}
    assert entry["fp32_in_int8"] is None  # an fp32 artifact
    md = (out / "bench.md").read_text()
    assert "## Where the time goes" in md and "model.onnx on ort-cpu" in md and "share %" in md
    assert Path(report.files[BENCH_PROFILE_PNG]).stat().st_size > 1000
    with pytest.raises(Exception, match="--profile-runs"):
        BenchConfig(profile_runs=0)
