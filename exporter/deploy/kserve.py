"""``tlx export RUN --format kserve``: Kubernetes manifests that serve the Triton repository.

Writes, after every object passed its schema check (``kserve_schema``)::

    RUN/kserve/inferenceservice.yaml   KServe v1beta1 InferenceService, Triton runtime
    RUN/kserve/deployment.yaml         a plain Deployment + Service (clusters without KServe)

Both read the repository from ``--storage-uri`` (a copy of ``RUN/triton``), ask for the CPUs
the serving plan was measured with (``kserve_plan``), cap every runtime's threads to them,
and report ready on Triton's ``/v2/health/ready``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.config import KServeConfig, TritonConfig
from exporter.core.fsio import write_text
from exporter.core.resources import ESTIMATE_MARGIN, MIB
from exporter.deploy.kserve_plan import ServingPlan
from exporter.deploy.kserve_schema import (
    KSERVE_API_VERSION,
    check_inference_service,
    check_kubernetes,
)
from exporter.model.footprint import inference_activation_bytes, weights_bytes

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.export.common import StepFn

KSERVE_DIR = "kserve"
INFERENCE_SERVICE_FILE = "inferenceservice.yaml"
DEPLOYMENT_FILE = "deployment.yaml"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # tritonserver's defaults
# KServe's kserve-tritonserver ClusterServingRuntime serves HTTP on 8080.
KSERVE_TRITON_HTTP_PORT = 8080
READY_PATH, LIVE_PATH = "/v2/health/ready", "/v2/health/live"
# tritonserver's own memory besides the model instances (an allowance, not a measurement).
TRITON_BASE_BYTES = 1 << 30
# The thread pools a runtime may size from the node's cores instead of the pod's limit.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
MANAGED_BY = "tlx"


@dataclass(frozen=True)
class KServeResult:
    """What ``package_kserve`` wrote."""

    folder: Path
    files: list[Path]
    name: str
    storage_uri: str
    plan: ServingPlan
    memory: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "folder": str(self.folder),
            "files": [str(f) for f in self.files],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Manifests:
    """The checked objects' YAML by file name, before anything is written."""

    texts: dict[str, str]
    name: str
    memory: str


def build_manifests(
    info: Run, kcfg: KServeConfig, tcfg: TritonConfig, plan: ServingPlan
) -> Manifests:
    """Build and check every object (GateFailed on the first schema error; nothing written)."""
    name = k8s_name(kcfg, tcfg)
    memory = memory_quantity(info, tcfg, plan)
    isvc = inference_service(name, kcfg, plan, memory)
    deployment, service = plain_deployment(name, kcfg, plan, memory)
    check_inference_service(isvc, where=f"{KSERVE_DIR}/{INFERENCE_SERVICE_FILE}")
    check_kubernetes(deployment, "V1Deployment", where=f"{KSERVE_DIR}/{DEPLOYMENT_FILE}")
    check_kubernetes(service, "V1Service", where=f"{KSERVE_DIR}/{DEPLOYMENT_FILE}: Service")
    texts = {INFERENCE_SERVICE_FILE: _yaml(isvc), DEPLOYMENT_FILE: _yaml(deployment, service)}
    return Manifests(texts, name, memory)


def _yaml(*docs: dict[str, Any]) -> str:
    import yaml

    # Through JSON first: a dict used twice would otherwise become a YAML anchor.
    plain = [json.loads(json.dumps(d)) for d in docs]
    return yaml.safe_dump_all(plain, sort_keys=False, default_flow_style=False)


def write_manifests(
    info: Run,
    manifests: Manifests,
    kcfg: KServeConfig,
    plan: ServingPlan,
    *,
    say: StepFn,
    started: float,
) -> KServeResult:
    """Write the checked manifests (each file atomically) into ``RUN/kserve``."""
    folder = info.run_dir / KSERVE_DIR
    folder.mkdir(exist_ok=True)
    files = []
    for filename, text in manifests.texts.items():
        write_text(folder / filename, text)
        files.append(folder / filename)
    say(f"kserve: {', '.join(f.name for f in files)} ({plan.source})")
    return KServeResult(
        folder=folder,
        files=files,
        name=manifests.name,
        storage_uri=str(kcfg.storage_uri),
        plan=plan,
        memory=manifests.memory,
        seconds=time.perf_counter() - started,
    )


def k8s_name(kcfg: KServeConfig, tcfg: TritonConfig) -> str:
    """``--k8s-name``, else the Triton model name as a Kubernetes name (``_``/``.`` → ``-``)."""
    from exporter.core.config.export import K8S_NAME_RE
    from exporter.core.errors import UsageError

    if kcfg.name:
        return kcfg.name
    name = tcfg.model_name.lower().replace("_", "-").replace(".", "-").strip("-")[:63]
    if not K8S_NAME_RE.match(name):
        raise UsageError(
            f"--model-name {tcfg.model_name!r} is not a Kubernetes name; give one with --k8s-name"
        )
    return name


def memory_quantity(info: Run, tcfg: TritonConfig, plan: ServingPlan) -> str:
    """An estimate (model/footprint.py's formulas): per instance, fp32 weights and the
    activations of one ``max_batch`` forward pass, with its margin; plus tritonserver."""
    per_instance = weights_bytes(info.num_classes) + inference_activation_bytes(
        info.preprocessing.image_size, tcfg.max_batch
    )
    total = TRITON_BASE_BYTES + plan.instances * per_instance * ESTIMATE_MARGIN
    return f"{math.ceil(total / MIB)}Mi"


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": MANAGED_BY}


def _resources(plan: ServingPlan, memory: str) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS): the measured cores, whole."""
    amounts = {"cpu": str(plan.cores), "memory": memory}
    if plan.gpus:
        amounts["nvidia.com/gpu"] = str(plan.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _env(plan: ServingPlan) -> list[dict[str, str]]:
    return [{"name": var, "value": str(plan.threads)} for var in THREAD_ENV]


def _probe(path: str, port: int | str) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": 5,
        "periodSeconds": 5,
        "failureThreshold": 3,
    }


def inference_service(
    name: str, kcfg: KServeConfig, plan: ServingPlan, memory: str
) -> dict[str, Any]:
    """The KServe v1beta1 InferenceService (the triton model format, KServe v2 protocol)."""
    target = str(plan.target_concurrency)
    return {
        "apiVersion": KSERVE_API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": _labels(name),
            "annotations": {
                # Knative's autoscaler: in-flight requests per pod (scaleTarget says the same
                # to KServe's RawDeployment mode's HPA).
                "autoscaling.knative.dev/metric": "concurrency",
                "autoscaling.knative.dev/target": target,
                "tlx.plan": plan.source,
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": kcfg.min_replicas,
                "maxReplicas": kcfg.max_replicas,
                "scaleMetric": "concurrency",
                "scaleTarget": plan.target_concurrency,
                "model": {
                    "modelFormat": {"name": "triton"},
                    "protocolVersion": "v2",
                    "storageUri": kcfg.storage_uri,
                    "env": _env(plan),
                    "resources": _resources(plan, memory),
                    "readinessProbe": _probe(READY_PATH, KSERVE_TRITON_HTTP_PORT),
                },
            }
        },
    }


def _repository(kcfg: KServeConfig) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """tritonserver's ``--model-repository`` and the volume it needs (for ``pvc://``)."""
    uri = str(kcfg.storage_uri)
    scheme, _, rest = uri.partition("://")
    if scheme != "pvc":  # tritonserver opens s3:// and gs:// repositories itself
        return uri, [], []
    claim, _, sub = rest.partition("/")
    mount = {"name": "model-repository", "mountPath": "/models", "readOnly": True}
    if sub.strip("/"):
        mount["subPath"] = sub.strip("/")
    volume = {
        "name": "model-repository",
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    return "/models", [volume], [mount]


def plain_deployment(
    name: str, kcfg: KServeConfig, plan: ServingPlan, memory: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Deployment running the official Triton container, and its ClusterIP Service."""
    from exporter.deploy.triton import TRITON_IMAGE

    repository, volumes, mounts = _repository(kcfg)
    labels = _labels(name)
    container: dict[str, Any] = {
        "name": "tritonserver",
        "image": TRITON_IMAGE,
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={repository}",
            *(f"--{n}-port={p}" for n, p in PORTS.items()),
        ],
        "ports": [{"name": n, "containerPort": p} for n, p in PORTS.items()],
        "env": _env(plan),
        "resources": _resources(plan, memory),
        "readinessProbe": _probe(READY_PATH, "http"),
        "livenessProbe": {**_probe(LIVE_PATH, "http"), "initialDelaySeconds": 30},
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict[str, Any] = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": {"tlx.plan": plan.source}},
        "spec": {
            "replicas": max(1, kcfg.min_replicas),
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": n, "port": p, "targetPort": n} for n, p in PORTS.items()],
        },
    }
    return deployment, service
