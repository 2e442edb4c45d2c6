"""The callable Triton hands each formed batch to: every request is checked on its own.

Triton checks a request's name, datatype and shape against the model config, but it reads the
batch dimension as a 32-bit count: a binary request of shape ``[2**62, 3, 32, 32]`` (or
``[0, 3, 32, 32]``, or over gRPC ``[-2**63, ...]``) with 12,288 bytes becomes a request of
batch 0 whose tensor is the one image without a batch dimension. Its scheduler counts such a
request as one row, but the Python backend (``CheckIncomingRequests`` in python_be.cc) sums
the first dimension of each tensor, here the 3 channels, and fails the whole batch it joined
("batch size 18 for 'vgg16_0_1', max allowed is 16") before any code of tlx runs.
:func:`reshape_input` therefore makes Triton hand the input over as ``[N, 1, 3, S, S]``: a
batch-0 request then arrives as ``[1, 3, S, S]``, counted as one row by both, and is told
apart by its rank here. Each request is checked alone; the good ones run as one batch and get
their rows, a bad one gets its own error (HTTP 400 / gRPC INVALID_ARGUMENT, one line), and a
failure of the model itself is logged here with its traceback while the clients get one line.

PyTriton 0.7's Python-backend model (the ``model.py`` it copies into Triton's repository) can
only fail a whole batch; :data:`STUB_PATCH` is appended to that copy so a response carrying
:data:`ERROR_KEY` becomes that request's own error, and so no exception text (a traceback
with the server's paths) leaves the stub.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.serve.client import INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    from exporter.serve.predictor import Predictor

LOGGER = logging.getLogger("tlx.serve")
# A response entry by this name is a per-request error message (UTF-8 bytes as uint8).
ERROR_KEY = "tlx_error"
MODEL_FAILED = "the model failed on this batch; the server's log has the details"

STUB_PATCH = f"""

# --- added by tlx (exporter/serve/model_callable.py) ---------------------------------------
# A response that carries {ERROR_KEY!r} is that request's own error (the others in the batch
# keep their results), and no exception text, which holds a traceback and the server's
# paths, is sent to a client: it goes to the server's log.
_tlx_pytriton_wrap_response = _wrap_response
_tlx_pytriton_execute = TritonPythonModel.execute


def _wrap_response(response, requested_outputs_names, model_outputs_dict):
    data = response.data or {{}}
    if {ERROR_KEY!r} in data:
        message = bytes(data[{ERROR_KEY!r}]).decode("utf-8", "replace")
        return pb_utils.InferenceResponse(
            output_tensors=[],
            error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG),
        )
    return _tlx_pytriton_wrap_response(response, requested_outputs_names, model_outputs_dict)


def _tlx_execute(self, triton_requests):
    try:
        return _tlx_pytriton_execute(self, triton_requests)
    except Exception as exc:
        LOGGER.error(f"tlx: a batch of {{len(triton_requests)}} request(s) failed: {{exc}}")
        raise pb_utils.TritonModelException({MODEL_FAILED!r}) from None


TritonPythonModel.execute = _tlx_execute
"""


def request_error(shape: tuple[int, ...], dtype: Any, *, image_size: int, max_batch: int) -> str:
    """Why one request's input cannot join a batch, in one line; "" when it can."""
    want = f"[N, 3, {image_size}, {image_size}] FP32 with 1 <= N <= {max_batch}"
    if len(shape) != 4 or tuple(shape[1:]) != (3, image_size, image_size):
        return (
            f"input {INPUT_NAME!r}: expected {want}; the model received shape {list(shape)} "
            "(is the request's batch dimension 0 or too large to represent?)"
        )
    if not 1 <= shape[0] <= max_batch:
        return f"input {INPUT_NAME!r}: expected {want}, got a batch of {shape[0]}"
    if np.dtype(dtype) != np.float32:
        return f"input {INPUT_NAME!r}: expected {want}, got {np.dtype(dtype).name}"
    return ""


def unwrap(x: np.ndarray, *, image_size: int, max_batch: int) -> tuple[np.ndarray, str]:
    """A request's input as Triton hands it (:func:`reshape_input`) → ``[N, 3, S, S]``, or why not.

    ``[N, 1, 3, S, S]`` is a request of N images. Anything else is one whose batch dimension
    Triton read as 0 (it was 0, or a multiple of 2**32 such as ``2**62`` or ``-2**63``).
    """
    if x.ndim == 5 and x.shape[1] == 1:
        x = x.reshape(x.shape[:1] + x.shape[2:])  # a view: no copy
        return x, request_error(x.shape, x.dtype, image_size=image_size, max_batch=max_batch)
    return x, (
        f"input {INPUT_NAME!r}: expected [N, 3, {image_size}, {image_size}] FP32 with "
        f"1 <= N <= {max_batch}; the server read the request's batch dimension as 0 "
        "(is it 0, or too large to represent?)"
    )


def _error(message: str) -> dict[str, np.ndarray]:
    return {ERROR_KEY: np.frombuffer(message.encode("utf-8"), dtype=np.uint8)}


def infer_callable(predictor: Predictor, *, max_batch: int) -> Callable[[list[Any]], list[dict]]:
    """The callable PyTriton binds for one instance: a list of requests → one response each."""
    size = predictor.image_size

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        responses: list[dict[str, np.ndarray]] = [{} for _ in requests]
        good: list[tuple[int, np.ndarray]] = []
        for i, request in enumerate(requests):
            x = request.data.get(INPUT_NAME) if hasattr(request, "data") else None
            if not isinstance(x, np.ndarray):
                responses[i] = _error(f"the request has no input {INPUT_NAME!r}")
                continue
            x, why = unwrap(x, image_size=size, max_batch=max_batch)
            if not why and not np.isfinite(x).all():
                # NaN/Inf pixels get confident logits from some artifacts (int8); the predictor
                # refuses them, which must not fail the other requests of the batch.
                why = f"input {INPUT_NAME!r}: NaN or Inf values; send finite pixels"
            if why:
                LOGGER.debug("refused one request: %s", why)
                responses[i] = _error(why)
            else:
                good.append((i, x))
        if not good:
            return responses
        try:
            batch = good[0][1] if len(good) == 1 else np.concatenate([x for _, x in good])
            logits = predictor.logits(batch)
        except Exception:  # the clients get one line; the traceback stays in this log
            LOGGER.exception("the model failed on a batch of %d request(s)", len(good))
            for i, _ in good:
                responses[i] = _error(MODEL_FAILED)
            return responses
        start = 0
        for i, x in good:
            responses[i] = {OUTPUT_NAME: logits[start : start + len(x)]}
            start += len(x)
        return responses

    return infer


def _models(triton: Any, model_name: str) -> list[Any]:
    return [m for m in triton._model_manager.models if m.model_name == model_name]  # PyTriton 0.7


def reshape_input(triton: Any, model_name: str, image_size: int) -> None:
    """Give the model config's input a ``reshape`` to ``[1, 3, S, S]`` (see the module's doc).

    Clients still send ``[N, 3, S, S]`` and Triton still checks that against ``dims``; only
    the tensor the Python backend counts and hands to the stub gains an axis of 1, so a request
    of batch 0 counts as the one row its scheduler reserved for it. PyTriton's ``Tensor`` has no
    reshape, so the config it sends to Triton's load API is amended.
    """
    for model in _models(triton, model_name):
        original = model.get_model_config

        def with_reshape(original: Callable[[], dict] = original) -> dict:
            config = original()
            for entry in config.get("input", []):
                if entry.get("name") == INPUT_NAME:
                    entry["reshape"] = {"shape": [1, 3, image_size, image_size]}
            return config

        model.get_model_config = with_reshape


def patch_stub_model(triton: Any, model_name: str) -> None:
    """Append :data:`STUB_PATCH` to the ``model.py`` PyTriton sends to Triton for this model.

    Raises:
        RuntimeError: this PyTriton no longer sends a ``model.py`` (the version pin broke).
    """
    for model in _models(triton, model_name):
        original = model.get_proxy_model_files

        def with_patch(original: Callable[[], dict[str, bytes]] = original) -> dict[str, bytes]:
            files = dict(original())
            key = next((k for k in files if k.endswith("/model.py")), None)
            if key is None:
                raise RuntimeError("PyTriton sent no model.py to patch (is it version 0.7?)")
            files[key] = files[key] + STUB_PATCH.encode("utf-8")
            return files

        model.get_proxy_model_files = with_patch
