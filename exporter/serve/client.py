"""A small KServe v2 HTTP client (Triton's protocol): what the load test and verify speak.

Standard library only (one keep-alive ``http.client`` connection per client, so a load-test
thread owns one), and tensors travel in the protocol's binary extension: JSON would spend more
time formatting floats than the model spends on a 32 px image. The official ``tritonclient``
speaks to the same endpoints; the tests check both against one server.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import numpy as np

from exporter.core.errors import EnvironmentUnavailable, UsageError

if TYPE_CHECKING:
    from exporter.core.runfolder import Run

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Model-config parameters by which a tlx server names what it serves (the run's manifest
# entry and its hash), so a client can prove it compares the very file it has locally.
PARAM_ARTIFACT = "tlx_artifact"
PARAM_SHA256 = "tlx_sha256"
PARAM_PRECISION = "tlx_precision"
PARAM_RUNTIME = "tlx_runtime"
HEADER_LENGTH = "Inference-Header-Content-Length"
_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64}


class ServerError(Exception):
    """The server answered a request with an error status (the message is the server's)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class MalformedAnswer(UsageError, ValueError):
    """An answer that breaks the KServe v2 protocol: exit 2; a load test counts a failure."""


@dataclass(frozen=True)
class ServedModel:
    """What the server says about one model (its config endpoint), in the terms tlx needs."""

    name: str
    max_batch_size: int
    input_name: str
    input_dims: tuple[int, ...]  # without the batch dimension
    input_datatype: str
    output_name: str
    num_classes: int
    instances: int
    dynamic_batching: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def artifact(self) -> str | None:
        return self.parameters.get(PARAM_ARTIFACT)

    @property
    def sha256(self) -> str | None:
        return self.parameters.get(PARAM_SHA256)

    @property
    def precision(self) -> str | None:
        return self.parameters.get(PARAM_PRECISION)

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "input_dims": list(self.input_dims)}
        return {**d, "artifact": self.artifact, "sha256": self.sha256, "precision": self.precision}


def parse_url(url: str, *, option: str = "--server") -> tuple[str, int]:
    """``http://host:port`` (or ``host:port``) → ``(host, port)``; only plain HTTP.

    Raises:
        UsageError: not an http URL with a host, or a bad port.
    """
    text = url.strip()
    try:
        parts = urlsplit(text if "://" in text else f"http://{text}")
        hostname = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        hostname = None
    if hostname is None or parts.scheme != "http":
        raise UsageError(f"{option} {url!r}: give an http URL such as http://127.0.0.1:8000")
    if parts.path not in ("", "/") or parts.query:
        raise UsageError(f"{option} {url!r}: give the server's base URL, without a path")
    try:
        port = parts.port or 80
    except ValueError:
        raise UsageError(f"{option} {url!r}: the port is not a number from 1 to 65535") from None
    return hostname, port


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is on the loopback interface."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


class TritonHttpClient:
    """One keep-alive connection to a KServe v2 server; not thread-safe (one per thread)."""

    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        self.url = url
        self.host, self.port = parse_url(url)
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> TritonHttpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        # A kept-alive connection the server closed fails on first use: reconnect once.
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout_s
                )
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read()
                return response.status, response, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` and decode its JSON; an error status raises :class:`ServerError`."""
        status, _, data = self._request("GET", path)
        if status != 200:
            raise ServerError(status, _error_text(data))
        try:
            answer = json.loads(data or b"{}")
        except ValueError:
            raise MalformedAnswer(f"--server {self.url}: {path} did not answer JSON") from None
        if not isinstance(answer, dict):
            raise MalformedAnswer(
                f"--server {self.url}: {path} answered a JSON {type(answer).__name__}, "
                "not an object; is it a KServe v2 (Triton) server?"
            )
        return answer

    def ready(self, model: str | None = None) -> bool:
        """The server's (or ``model``'s) ``ready`` endpoint; False when nothing answers."""
        path = "/v2/health/ready" if model is None else f"/v2/models/{quote(model)}/ready"
        try:
            return self._request("GET", path)[0] == 200
        except OSError:
            self.close()
            return False

    def model(self, model: str) -> ServedModel:
        """The served model's configuration, checked to be a one-input classifier.

        Raises:
            EnvironmentUnavailable: nothing answers at the URL (exit 3).
            UsageError: no such model, or not a single-input single-output model.
            MalformedAnswer: the config is not a KServe v2 model config.
        """
        try:
            cfg = self.get_json(f"/v2/models/{quote(model)}/config")
        except OSError as exc:
            raise EnvironmentUnavailable(
                f"--server {self.url}: no server answers ({exc.__class__.__name__}: {exc}); "
                "start one with `tlx serve RUN`"
            ) from exc
        except ServerError as exc:
            raise UsageError(
                f"--server {self.url}: model {model!r} is not served there ({exc.message}); "
                "name it with --model-name"
            ) from exc
        return _served_model(self.url, model, cfg)

    def stats(self, model: str) -> dict[str, Any]:
        """The model's entry of ``/v2/models/<m>/stats`` (Triton's statistics extension)."""
        data = self.get_json(f"/v2/models/{quote(model)}/stats")
        entries = data.get("model_stats") or [{}]
        return entries[0] if isinstance(entries, list) and isinstance(entries[0], dict) else {}

    def infer(
        self,
        model: str,
        x: np.ndarray,
        *,
        input_name: str = INPUT_NAME,
        output_name: str = OUTPUT_NAME,
    ) -> np.ndarray:
        """Send one batch (binary tensor extension) and return the output as float32.

        Raises:
            ServerError: the server refused the request (its message says why).
            MalformedAnswer: the answer is not a ``(N, C)`` output for the ``N`` images sent.
            OSError: the connection failed.
        """
        x = np.ascontiguousarray(x)
        datatype = next((k for k, v in _DTYPES.items() if x.dtype == v), None)
        if datatype is None:
            raise UsageError(f"cannot send a {x.dtype} tensor; use float32")
        raw = x.tobytes()
        header = {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(x.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
        }
        head = json.dumps(header).encode()
        headers = {
            "Content-Type": "application/octet-stream",
            HEADER_LENGTH: str(len(head)),
        }
        status, response, data = self._request(
            "POST", f"/v2/models/{quote(model)}/infer", head + raw, headers
        )
        if status != 200:
            raise ServerError(status, _error_text(data))
        try:
            out = decode_response(data, response.getheader(HEADER_LENGTH), output_name)
        except MalformedAnswer as exc:
            raise MalformedAnswer(f"--server {self.url}: {exc}") from None
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise MalformedAnswer(
                f"--server {self.url}: answered {x.shape[0]} image(s) with output "
                f"{output_name!r} of shape {list(out.shape)}; expected [{x.shape[0]}, classes]"
            )
        return out


def check_served_model(info: Run, served: ServedModel) -> list[str]:
    """The server must serve one of this run's files at this run's input size.

    Returns notes (e.g. a server that does not name its artifact).

    Raises:
        UsageError: another input size, class count or file than the run's.
    """
    size = info.preprocessing.image_size
    dims = tuple(served.input_dims)
    if len(dims) != 3 or dims[0] != 3 or dims[1] != dims[2] or dims[1] < 1:
        raise UsageError(
            f"the server's model {served.name!r} takes {list(dims)} inputs; tlx sends "
            "(3, H, W) images with H == W"
        )
    if dims[1] != size:
        raise UsageError(
            f"the server's model takes {dims[1]} px images, the run {info.run_dir} {size} px: "
            "it serves another run"
        )
    if served.num_classes and served.num_classes != info.num_classes:
        raise UsageError(
            f"the server's model has {served.num_classes} outputs, the run {info.run_dir} "
            f"{info.num_classes} classes: it serves another model"
        )
    if not served.sha256:
        return [f"the server does not name the file it serves; assumed to be {info.run_dir}'s"]
    manifest = info.manifest  # the opened run has read it already
    if any(e.files and e.files[0].sha256 == served.sha256 for e in manifest.artifacts.values()):
        return []
    raise UsageError(
        f"the server serves {served.artifact} (sha256 {served.sha256[:12]}…), which is not a "
        f"file of {info.run_dir}'s manifest: point --server at a server of this run"
    )


def decode_response(data: bytes, header_length: str | None, output_name: str) -> np.ndarray:
    """The named output of an infer response, binary or JSON, as a float32 array.

    Raises:
        MalformedAnswer: not a KServe v2 response, or no output of that name.
    """
    try:
        size = int(header_length) if header_length else len(data)
        body = json.loads(data[:size])
        outputs = body.get("outputs", [])
        if not isinstance(outputs, list):
            raise TypeError("'outputs' is not a list")
        offset = size
        for out in outputs:
            shape = tuple(_count(d, "shape") for d in out["shape"])
            dtype = _DTYPES.get(out.get("datatype", ""), np.float32)
            nbytes = (out.get("parameters") or {}).get("binary_data_size")
            if nbytes is not None:
                nbytes = _count(nbytes, "binary_data_size")
                if offset + nbytes > len(data):
                    raise ValueError(f"binary_data_size {nbytes} runs past the body")
                array = np.frombuffer(
                    data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=offset
                ).reshape(shape)
                offset += nbytes
            else:
                array = np.asarray(out["data"], dtype=dtype).reshape(shape)
            if out.get("name") == output_name:
                return array.astype(np.float32)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        reason = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise MalformedAnswer(f"a malformed infer response ({reason[:200]})") from None
    raise MalformedAnswer(f"the infer response has no output {output_name!r}")


def _count(value: Any, what: str) -> int:  # JSON's non-negative integers only
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} holds {value!r}, not a count")
    return value


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", data[:300]))
    except (ValueError, AttributeError):
        return data[:300].decode("utf-8", "replace")


def _served_model(url: str, name: str, cfg: dict[str, Any]) -> ServedModel:
    inputs, outputs = cfg.get("input") or [], cfg.get("output") or []
    if (
        isinstance(inputs, list)
        and isinstance(outputs, list)
        and (len(inputs), len(outputs)) != (1, 1)
    ):
        raise UsageError(
            f"--server {url}: model {name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "tlx talks to one-input, one-output classifiers (as `tlx serve` serves them)"
        )
    try:
        params = {
            str(k): str((v or {}).get("string_value", ""))
            for k, v in cfg.get("parameters", {}).items()
        }
        groups = cfg.get("instance_group") or [{}]
        served = ServedModel(
            name=name,
            max_batch_size=_count(cfg.get("max_batch_size", 0), "max_batch_size"),
            input_name=_text(inputs[0]["name"]),
            input_dims=tuple(_count(d, "input dims") for d in inputs[0].get("dims", [])),
            input_datatype=str(inputs[0].get("data_type", "TYPE_FP32")).removeprefix("TYPE_"),
            output_name=_text(outputs[0]["name"]),
            num_classes=([0] + [_count(d, "output dims") for d in outputs[0].get("dims", [])])[-1],
            instances=sum(_count(g.get("count", 1), "instance_group count") for g in groups),
            dynamic_batching=dict(cfg.get("dynamic_batching") or {}),
            parameters=params,
        )
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        reason = f"no {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise MalformedAnswer(
            f"--server {url}: the config of model {name!r} is malformed ({reason[:200]}); "
            "is it a KServe v2 (Triton) server?"
        ) from None
    return served


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a tensor name is {value!r}, not a string")
    return value
