"""Schema checks of the Kubernetes manifests, before anything is written.

- The InferenceService: the OpenAPI schema KServe publishes in its CRD
  (``config/crd/full/serving.kserve.io_inferenceservices.yaml``), vendored as the subset tlx
  needs in ``kserve_crd_v1beta1.json`` (its ``source`` names the upstream version; its
  ``subset`` says what was cut: the predictor's ``model`` and small fields whole, the others
  by name and type). Validated as ``kubectl apply --validate=strict`` would: an object's
  unknown key is an error (the API server would drop it silently otherwise). On top, tlx's own
  rule: the model names its format and its storage (the CRD makes both optional).
- Deployment, Service, and the InferenceService's metadata (the CRD says only "object"): the
  ``kubernetes`` Python client's models. They check types and required fields but drop
  unknown keys silently, so each object is deserialized and serialized back, and anything
  that did not survive the round trip (a misspelt field, a value coerced to another type) is
  an error too.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from exporter.core.errors import EnvironmentUnavailable, GateFailed

SCALE_HINT = 'pip install -e ".[scale]"'
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
CRD_SUBSET = Path(__file__).with_name("kserve_crd_v1beta1.json")
# tlx's own rule on top of KServe's: the model says what it is and where it is stored.
TLX_RULES: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": KSERVE_API_VERSION},
        "kind": {"const": "InferenceService"},
        "metadata": {"required": ["name"]},
        "spec": {
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "required": ["model"],
                    "properties": {
                        "model": {
                            "required": ["modelFormat", "storageUri"],
                            "properties": {
                                "modelFormat": {"properties": {"name": {"minLength": 1}}},
                                "storageUri": {"minLength": 1},
                            },
                        }
                    },
                }
            },
        },
    },
}


@lru_cache(maxsize=1)
def inference_service_schema() -> dict[str, Any]:
    """The vendored CRD subset, strict: every object that lists its properties allows no
    other key (as ``kubectl apply --validate=strict``), unless the CRD keeps unknown fields."""
    schema = json.loads(CRD_SUBSET.read_text(encoding="utf-8"))["openAPIV3Schema"]
    _strict(schema)
    return schema


@lru_cache(maxsize=1)
def _container_keys() -> frozenset[str]:
    from kubernetes.client import V1Container

    return frozenset(V1Container.attribute_map.values())


def _strict(node: Any) -> None:
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)


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
    """KServe's CRD schema (strict), tlx's rules, then the Kubernetes metadata model.

    Raises:
        GateFailed: the first problem found.
    """
    import jsonschema

    for schema, what in (
        (inference_service_schema(), f"KServe {KSERVE_API_VERSION} InferenceService CRD"),
        (TLX_RULES, "tlx's InferenceService"),
    ):
        validator = jsonschema.Draft7Validator(schema)
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        if errors:
            error = errors[0]
            raise GateFailed(
                f"{where}: {error.json_path}: {error.message} ({what}); nothing written"
            )
    check_kubernetes(obj["metadata"], "V1ObjectMeta", where=f"{where}: metadata")
    model = obj["spec"]["predictor"]["model"]
    # The model is a Container plus KServe's own fields (modelFormat, storageUri, ...).
    container = {k: v for k, v in model.items() if k in _container_keys()}
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
