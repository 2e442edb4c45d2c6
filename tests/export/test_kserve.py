"""``tlx export --format kserve``: manifests checked against the published schemas."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from kubernetes.client import ApiClient
from tritonclient.grpc import model_config_pb2 as pb2
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.config import KServeConfig
from exporter.core.errors import (
    EXIT_ENV,
    EXIT_GATE,
    EXIT_OK,
    EXIT_USAGE,
    GateFailed,
    InputFileError,
)
from exporter.deploy import kserve as kserve_module
from exporter.deploy.kserve_plan import ServingPlan, knee_concurrency, serving_plan
from exporter.deploy.kserve_schema import check_inference_service, check_kubernetes

URI = "s3://models/tlx/triton"


def invoke(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def _docs(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text()))


def _round_trip(obj: dict[str, Any], type_name: str) -> dict[str, Any]:
    api = ApiClient()
    return api.sanitize_for_serialization(
        api.deserialize(json.dumps(obj), type_name, "application/json")
    )


@pytest.fixture(scope="module")
def kserve_run(onnx_run: Path, module_tmp: Path, link_run) -> Path:
    run = link_run(onnx_run, module_tmp / "run")
    result = invoke(str(run), "--format", "kserve", "--storage-uri", URI)
    assert result.exit_code == EXIT_OK, result.output
    assert "kubectl apply -f" in result.stdout
    return run


def test_inference_service_round_trips_and_carries_the_plan(kserve_run: Path) -> None:
    (isvc,) = _docs(kserve_run / "kserve" / "inferenceservice.yaml")
    check_inference_service(isvc, where="test")
    assert _round_trip(isvc["metadata"], "V1ObjectMeta") == isvc["metadata"]
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["storageUri"] == URI
    # No loadtest.json: serve's measured default, 2 instances x 1 thread on 2 cores.
    assert model["resources"]["limits"]["cpu"] == "2"
    assert model["resources"]["requests"] == model["resources"]["limits"]
    assert {e["name"]: e["value"] for e in model["env"]}["OMP_NUM_THREADS"] == "1"
    assert model["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/target"] == "4"
    assert predictor["scaleTarget"] == 4 and predictor["scaleMetric"] == "concurrency"


def test_deployment_and_service_round_trip(kserve_run: Path) -> None:
    deployment, service = _docs(kserve_run / "kserve" / "deployment.yaml")
    assert "&id" not in (kserve_run / "kserve" / "deployment.yaml").read_text()  # no anchors
    assert _round_trip(deployment, "V1Deployment") == deployment
    assert _round_trip(service, "V1Service") == service
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == f"--model-repository={URI}"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["limits"]["cpu"] == "2"


def test_the_repository_runs_the_plan(kserve_run: Path) -> None:
    config = text_format.Parse(
        (kserve_run / "triton" / "vgg16" / "config.pbtxt").read_text(), pb2.ModelConfig()
    )
    assert [g.count for g in config.instance_group] == [2]
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    report = json.loads((kserve_run / "deploy.json").read_text())
    assert report["results"]["kserve"]["plan"]["instances"] == 2
    assert "triton/vgg16" in json.loads((kserve_run / "manifest.json").read_text())["artifacts"]


def test_existing_manifests_need_force(kserve_run: Path) -> None:
    result = invoke(str(kserve_run), "--format", "kserve", "--storage-uri", URI)
    assert result.exit_code == EXIT_USAGE and "--force" in result.output


@pytest.mark.parametrize("target", ["inference_service", "plain_deployment"])
def test_a_schema_invalid_edit_is_refused(
    onnx_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_run, target: str
) -> None:
    build = getattr(kserve_module, target)

    def misspelt(*args: Any, **kwargs: Any) -> Any:
        out = build(*args, **kwargs)
        if target == "inference_service":
            out["spec"]["predictor"]["model"]["storageURI"] = URI  # KServe spells it storageUri
        else:
            out[0]["spec"]["replica"] = 2  # the Deployment field is replicas
        return out

    monkeypatch.setattr(kserve_module, target, misspelt)
    run = link_run(onnx_run, tmp_path / "run")
    result = invoke(str(run), "--format", "kserve", "--storage-uri", URI)
    assert result.exit_code == EXIT_GATE, result.output
    assert ("storageURI" if target == "inference_service" else "replica") in result.output
    assert not (run / "kserve").exists() and not (run / "triton").exists()


@pytest.mark.parametrize(
    ("edit", "found"),
    [
        (lambda o: o["spec"]["predictor"].update(replicas=2), "replicas"),
        (lambda o: o["spec"]["predictor"].update(scaleMetric="latency"), "latency"),
        (lambda o: o["spec"]["predictor"]["model"].pop("storageUri"), "storageUri"),
        (lambda o: o["spec"]["predictor"]["model"].update(env=[{"value": "1"}]), "name"),
        (lambda o: o["spec"]["predictor"]["model"].update(ports=[{"port": 1}]), "containerPort"),
        (lambda o: o["metadata"].update(labels="x"), "V1ObjectMeta"),
    ],
)
def test_inference_service_check_rejects(edit, found: str) -> None:
    plan = ServingPlan(2, 2, 1, 4, 0, "test")
    obj = kserve_module.inference_service("vgg16", KServeConfig(storage_uri=URI), plan, "1Gi")
    check_inference_service(obj, where="x")
    edit(obj)
    with pytest.raises(GateFailed, match=found):
        check_inference_service(obj, where="x")


def test_pvc_storage_mounts_the_claim() -> None:
    plan = ServingPlan(2, 2, 1, 4, 0, "test")
    kcfg = KServeConfig(storage_uri="pvc://models/runs/triton")
    deployment, _ = kserve_module.plain_deployment("vgg16", kcfg, plan, "1Gi")
    check_kubernetes(deployment, "V1Deployment", where="x")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "models"
    assert pod["containers"][0]["volumeMounts"][0]["subPath"] == "runs/triton"


def test_storage_uri_is_required_and_checked(onnx_run: Path) -> None:
    result = invoke(str(onnx_run), "--format", "kserve")
    assert result.exit_code == EXIT_USAGE and "--storage-uri" in result.output
    result = invoke(str(onnx_run), "--format", "kserve", "--storage-uri", "http://x/y")
    assert result.exit_code == EXIT_USAGE and "s3://" in result.output


def test_missing_extra_names_the_install(onnx_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes → ImportError
    monkeypatch.setitem(sys.modules, "kubernetes.client", None)
    result = invoke(str(onnx_run), "--format", "kserve", "--storage-uri", URI)
    assert result.exit_code == EXIT_ENV
    assert 'pip install -e ".[scale]"' in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def _loadtest(path: Path, rows: list[dict[str, Any]], *, cores: int, instances: int) -> None:
    report = {
        "environment": {"cpu_count": cores},
        "setup": {"served": {"instances": instances}},
        "rows": rows,
    }
    (path / "loadtest.json").write_text(json.dumps(report))


def test_plan_from_a_load_test(tmp_path: Path) -> None:
    rows = [
        {"concurrency": c, "stable": True, "errors": 0, "throughput_img_s": t}
        for c, t in ((1, 10.0), (2, 17.0), (4, 19.5), (8, 20.0))
    ]
    rows.append({"concurrency": 16, "stable": True, "errors": 3, "throughput_img_s": 40.0})
    _loadtest(tmp_path, rows, cores=4, instances=2)
    plan = serving_plan(tmp_path, "cpu")
    assert (plan.cores, plan.instances, plan.threads) == (4, 2, 2)
    assert plan.target_concurrency == 4 and "loadtest.json" in plan.source
    assert knee_concurrency([]) is None


def test_a_malformed_load_test_is_named(tmp_path: Path) -> None:
    (tmp_path / "loadtest.json").write_text("{}")
    with pytest.raises(InputFileError, match=r"loadtest\.json"):
        serving_plan(tmp_path, "cpu")


def test_no_load_test_uses_the_measured_default(tmp_path: Path) -> None:
    plan = serving_plan(tmp_path, "cpu")
    assert (plan.cores, plan.instances, plan.threads, plan.target_concurrency) == (2, 2, 1, 4)


def test_an_existing_repository_must_run_the_plan(onnx_run: Path, tmp_path: Path, link_run) -> None:
    run = link_run(onnx_run, tmp_path / "run")
    assert invoke(str(run), "--format", "triton", "--instances", "1").exit_code == EXIT_OK
    result = invoke(str(run), "--format", "kserve", "--storage-uri", URI)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "1 instance(s)" in result.output and "--force" in result.output
    assert not (run / "kserve").exists()
    result = invoke(str(run), "--format", "kserve", "--storage-uri", URI, "--force")
    assert result.exit_code == EXIT_OK, result.output
    config = text_format.Parse(
        (run / "triton" / "vgg16" / "config.pbtxt").read_text(), pb2.ModelConfig()
    )
    assert [g.count for g in config.instance_group] == [2]


@pytest.mark.parametrize(
    ("edit", "found"),
    [
        # Only the CRD's schema knows these (the Kubernetes models accept or coerce them).
        (lambda o: o["spec"]["predictor"].update(minReplicas="2"), "integer"),
        (lambda o: o["spec"]["predictor"].update(containerConcurrency=1.5), "integer"),
        (
            lambda o: o["spec"]["predictor"]["model"]["resources"]["limits"].update(cpu="2 cores"),
            "does not match",
        ),
        (
            lambda o: o["spec"]["predictor"]["model"]["readinessProbe"]["httpGet"].update(paht="/"),
            "paht",
        ),
        (lambda o: o["spec"].update(predicter={}), "predicter"),
        (lambda o: o.update(apiVersion="serving.kserve.io/v1alpha1"), "v1beta1"),
    ],
)
def test_the_published_crd_schema_refuses(edit, found: str) -> None:
    plan = ServingPlan(2, 2, 1, 4, 0, "test")
    obj = kserve_module.inference_service("vgg16", KServeConfig(storage_uri=URI), plan, "1Gi")
    edit(obj)
    with pytest.raises(GateFailed, match=found):
        check_inference_service(obj, where="x")


def test_the_vendored_crd_names_its_source_and_is_a_subset() -> None:
    from exporter.deploy.kserve_schema import CRD_SUBSET

    doc = json.loads(CRD_SUBSET.read_text())
    assert "serving.kserve.io_inferenceservices.yaml" in doc["source"]
    assert "v0.20.0" in doc["source"]
    predictor = doc["openAPIV3Schema"]["properties"]["spec"]["properties"]["predictor"]
    assert "storageUri" in predictor["properties"]["model"]["properties"]
    assert predictor["properties"]["affinity"] == {"type": "object"}  # name and type only
