"""After OpenVINO's CPU plugin, the main thread's alternate signal stack is one tlx owns.

The plugin installs an alternate stack and frees it when it is unloaded; CPython delivers
signals to its handlers on that stack (SA_ONSTACK), so a SIGTERM after `tlx optimize` had
timed OpenVINO crashed a distillation with SIGSEGV instead of checkpointing. The end-to-end
case is tests/optimize/test_prune.py's SIGTERM test run after test_optimize_prune.py.
"""

from __future__ import annotations

import ctypes
import os
import signal

import numpy as np
import pytest
from onnx import TensorProto, helper

from exporter.runtimes import signal_stack


def _current_stack() -> signal_stack._StackT:
    libc = ctypes.CDLL(None, use_errno=True)
    cur = signal_stack._StackT()
    assert libc.sigaltstack(None, ctypes.byref(cur)) == 0
    return cur


def test_the_openvino_plugins_signal_stack_is_replaced_by_ours() -> None:
    ov = pytest.importorskip("openvino", reason="the openvino runtime is not installed")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU")
    compiled(np.ones((1, 4), np.float32))
    signal_stack.own_signal_stack()
    cur = _current_stack()
    if cur.ss_flags & 2:  # SS_DISABLE: this OpenVINO build set none; nothing to own
        return
    assert cur.ss_sp == ctypes.addressof(signal_stack._KEEP[-1])
    assert signal_stack.own_signal_stack() is False  # idempotent
    del compiled, core
    got: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert got == [signal.SIGTERM]
