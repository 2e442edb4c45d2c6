"""Schema checks of the Kubernetes manifests, before anything is written.

- Deployment, Service, and every Kubernetes type inside the InferenceService (its metadata,
  the model's container fields): the ``kubernetes`` Python client's models. They check types
  and required fields but drop unknown keys silently, so each object is deserialized and
  serialized back, and anything that did not survive the round trip (a misspelt field, a
  value coerced to another type) is an error too.
- The InferenceService's own fields: a JSON schema of the ``serving.kserve.io/v1beta1`` keys
  tlx may emit. The key lists are those of the KServe Python SDK's generated models
  (kserve 0.21: ``V1beta1PredictorSpec``, ``V1beta1ModelSpec``); the SDK itself is not a
  dependency, because importing it imports KServe's model server (FastAPI, pandas, gRPC).
"""

from __future__ import annotations

import json
from typing import Any

from exporter.core.errors import EnvironmentUnavailable, GateFailed

SCALE_HINT = 'pip install -e ".[scale]"'
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"

# kserve 0.21 SDK, V1beta1PredictorSpec.attribute_map (a PodSpec plus KServe's fields).
PREDICTOR_KEYS = [
    "activeDeadlineSeconds",
    "affinity",
    "annotations",
    "autoScaling",
    "automountServiceAccountToken",
    "batcher",
    "canaryTrafficPercent",
    "containerConcurrency",
    "containers",
    "deploymentStrategy",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "ephemeralContainers",
    "hostAliases",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "hostUsers",
    "hostname",
    "hostnameOverride",
    "huggingface",
    "imagePullSecrets",
    "initContainers",
    "labels",
    "lightgbm",
    "logger",
    "maxReplicas",
    "minReplicas",
    "model",
    "name",
    "nodeName",
    "nodeSelector",
    "onnx",
    "os",
    "overhead",
    "paddle",
    "pmml",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "pytorch",
    "readinessGates",
    "resourceClaims",
    "resources",
    "restartPolicy",
    "runtimeClassName",
    "scaleMetric",
    "scaleMetricType",
    "scaleTarget",
    "schedulerName",
    "schedulingGates",
    "schedulingGroup",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "sklearn",
    "storageContainerName",
    "storageUris",
    "subdomain",
    "tensorflow",
    "terminationGracePeriodSeconds",
    "timeout",
    "tolerations",
    "topologySpreadConstraints",
    "triton",
    "volumes",
    "workerSpec",
    "xgboost",
]
# kserve 0.21 SDK, V1beta1ModelSpec.attribute_map: a Container plus these KServe fields.
MODEL_KSERVE_KEYS = [
    "confidential",
    "modelFormat",
    "protocolVersion",
    "runtime",
    "runtimeVersion",
    "storage",
    "storageUri",
]
MODEL_CONTAINER_KEYS = [
    "args",
    "command",
    "env",
    "envFrom",
    "image",
    "imagePullPolicy",
    "lifecycle",
    "livenessProbe",
    "name",
    "ports",
    "readinessProbe",
    "resizePolicy",
    "resources",
    "restartPolicy",
    "restartPolicyRules",
    "securityContext",
    "startupProbe",
    "stdin",
    "stdinOnce",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "tty",
    "volumeDevices",
    "volumeMounts",
    "workingDir",
]
_INT = {"type": "integer", "minimum": 0}
INFERENCE_SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": KSERVE_API_VERSION},
        "kind": {"const": "InferenceService"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "type": "object",
                    "propertyNames": {"enum": PREDICTOR_KEYS},
                    "properties": {
                        "minReplicas": _INT,
                        "maxReplicas": _INT,
                        "scaleTarget": _INT,
                        # KServe's ScaleMetric enum
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "model": {
                            "type": "object",
                            "propertyNames": {"enum": MODEL_KSERVE_KEYS + MODEL_CONTAINER_KEYS},
                            "required": ["modelFormat", "storageUri"],
                            "properties": {
                                "modelFormat": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string", "minLength": 1},
                                        "version": {"type": "string"},
                                    },
                                },
                                "protocolVersion": {"enum": ["v1", "v2", "grpc-v2"]},
                                "runtime": {"type": "string"},
                                "storageUri": {"type": "string", "minLength": 1},
                            },
                        },
                    },
                    "required": ["model"],
                }
            },
        },
    },
}


def require_scale() -> None:
    """The kserve format's environment check: the schema packages import (exit 3 if not)."""
    try:
        import jsonschema  # noqa: F401
        import kubernetes.client  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        raise EnvironmentUnavailable(
            f"--format kserve checks the manifests with the kubernetes and jsonschema packages "
            f"({exc.name or exc} is missing): {SCALE_HINT}"
        ) from exc


def check_kubernetes(obj: dict[str, Any], type_name: str, *, where: str) -> None:
    """``obj`` is a valid ``type_name`` (``V1Deployment``...) for the Kubernetes client models.

    Raises:
        GateFailed: a wrong type, a missing required field, or a key the model does not have.
    """
    from kubernetes.client import ApiClient

    api = ApiClient()
    try:
        model = api.deserialize(json.dumps(obj), type_name, "application/json")
    except Exception as exc:  # pydantic's ValidationError, or ValueError in older clients
        # pydantic's message ends each error with a documentation link: keep the facts.
        lines = [ln for ln in str(exc).splitlines() if not ln.strip().startswith("For further")]
        raise GateFailed(
            f"{where}: the Kubernetes {type_name} schema rejects it "
            f"({' '.join(' '.join(lines).split())[:300]}); nothing written"
        ) from exc
    back = api.sanitize_for_serialization(model)
    lost = _first_difference(obj, back, type_name)
    if lost:
        raise GateFailed(
            f"{where}: {lost} is not a valid {type_name} field or value; nothing written"
        )


def check_inference_service(obj: dict[str, Any], *, where: str) -> None:
    """KServe's fields by the JSON schema, the Kubernetes types inside by the client models.

    Raises:
        GateFailed: the first problem found.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(INFERENCE_SERVICE_SCHEMA)
    error = next(iter(sorted(validator.iter_errors(obj), key=lambda e: list(e.path))), None)
    if error is not None:
        raise GateFailed(
            f"{where}: {error.json_path}: {error.message} (KServe v1beta1 InferenceService); "
            "nothing written"
        )
    check_kubernetes(obj["metadata"], "V1ObjectMeta", where=f"{where}: metadata")
    model = obj["spec"]["predictor"]["model"]
    container = {k: v for k, v in model.items() if k not in MODEL_KSERVE_KEYS}
    container.setdefault("name", "kserve-container")
    check_kubernetes(container, "V1Container", where=f"{where}: spec.predictor.model")


def _first_difference(want: Any, got: Any, path: str) -> str | None:
    """The first path where ``got`` (the round trip) lost or changed part of ``want``."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return path
        for key, value in want.items():
            if key not in got:
                return f"{path}.{key}"
            found = _first_difference(value, got[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return path
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if want == got and type(want) is type(got) else path
