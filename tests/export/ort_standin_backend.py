"""A Python-based stand-in for Triton's ONNX Runtime backend (copied to ``onnxruntime/model.py``).

Triton loads ``<backend-directory>/onnxruntime/model.py`` through its Python backend when no
``libtriton_onnxruntime.so`` is there (triton-inference-server/python_backend, "Python-based
Backends"), so a model repository that names ``backend: "onnxruntime"`` loads unchanged. It
runs the version folder's ``default_model_filename`` with onnxruntime's CPU provider.
The test prepends ``sys.path`` (the stub does not inherit the venv).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        name = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], name)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {
                n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs
            }
            results = self.session.run(self.outputs, feed)
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(r))
                for n, r in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
