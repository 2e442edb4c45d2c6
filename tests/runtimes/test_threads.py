"""Threads come from the cores the process may use: under ``taskset -c 0`` everything says 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs in a child pinned to one core: a tiny ONNX file loaded by ORT (and OpenVINO when
# installed) behind a manifest-style hash, every registered runtime's describe(), the serve
# plan, bench's default and the environment block.
CHILD = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper

    from exporter.core.config import ServeConfig
    from exporter.core.envinfo import environment
    from exporter.core.machine import machine, usable_cpus
    from exporter.runtimes import REGISTRY, load_all
    from exporter.runtimes.base import Artifact
    from exporter.serve.server import instance_plan

    folder = Path(sys.argv[1])
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 48])
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = folder / "tiny.onnx"
    onnx.save(model, str(path))
    data = path.read_bytes()
    art = Artifact(
        run_dir=folder, name="tiny.onnx", format="onnx", num_classes=48, image_size=4,
        files=(("tiny.onnx", hashlib.sha256(data).hexdigest(), len(data)),),
    )
    load_all()
    out = {
        "cpus_available": machine().cpus_available,
        "usable_cpus": usable_cpus(),
        "env_cpus_available": environment("cpu")["cpus_available"],
        "serve_plan": list(instance_plan(ServeConfig())),
        "describe": {},
    }
    for name, cls in sorted(REGISTRY.items()):
        device = "cpu" if "cpu" in cls.devices else cls.devices[0]
        out["describe"][name] = cls(art, device).describe()["threads"]
    ort = REGISTRY["ort-cpu"](art, "cpu")
    ort.load()
    out["ort_intra_op"] = ort.session.get_session_options().intra_op_num_threads
    out["ort_describe"] = ort.describe()["intra_op_threads"]
    if "openvino" in REGISTRY and REGISTRY["openvino"].unavailable_reason("cpu") is None:
        ov = REGISTRY["openvino"](art, "cpu")
        ov.load()
        out["openvino"] = ov.describe()["openvino"]["compiled"]
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) not installed")
def test_pinned_to_one_core_every_runtime_runs_one_thread(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cpus_available"] == out["usable_cpus"] == out["env_cpus_available"] == 1
    assert out["serve_plan"] == [1, 1]
    assert out["describe"] and set(out["describe"].values()) == {1}, out["describe"]
    assert out["ort_intra_op"] == 1 and out["ort_describe"] == 1
    for compiled in out.get("openvino", {}).values():
        assert compiled["INFERENCE_NUM_THREADS"] == "1"
