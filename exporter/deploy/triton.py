"""Package a run as a Triton model repository that loads the first time (``tlx export RUN
--format triton``): a deployment step, after verify and bench chose the artifact.

Layout (Triton's model repository; ``configs/<name>.pbtxt`` is chosen on the server with
``--model-config-name=<name>``)::

    RUN/triton/README.md              the docker command
    RUN/triton/<model>/config.pbtxt   for the target device
    RUN/triton/<model>/configs/cpu.pbtxt, configs/gpu.pbtxt (TensorRT accelerator)
    RUN/triton/<model>/labels.txt     one class per line (the output's label_filename)
    RUN/triton/<model>/1/model.onnx   a copy of the chosen, hash-checked artifact

The model folder is built in a temp folder and swapped in whole; every config is parsed with
Triton's schema first, the copy is run once on ONNX Runtime CPU at batch 1 and 2 with the
config's input names and shapes, and every file is listed in ``manifest.json``.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import TRITON, TritonConfig
from exporter.core.errors import GateFailed, InputFileError
from exporter.core.fsio import atomic_dir, clean_stale_temps, sha256_file, write_text
from exporter.core.manifest import ArtifactEntry, FileRecord
from exporter.deploy.triton_config import (
    KINDS,
    MODEL_FILE,
    TRT_CACHE_ROOT,
    ModelSpec,
    check_config,
    concrete,
    parse_config,
    render_config,
    tensors_from_manifest,
)
from exporter.serve.choice import choose
from exporter.verify.triton_check import LABELS_FILE

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.export.common import StepFn
    from exporter.runtimes.base import Artifact

TRITON_DIR = "triton"
# The official container; its ONNX Runtime must support the artifact's opset (README).
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.08-py3"


@dataclass(frozen=True)
class TritonResult:
    """What ``package_triton`` wrote."""

    repository: Path
    model_dir: Path
    source: str  # the manifest artifact copied to 1/model.onnx
    variant: str | None
    precision: str
    device: str
    reason: str  # why that artifact
    entry: ArtifactEntry
    command: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": str(self.repository),
            "model_dir": str(self.model_dir),
            "source_artifact": self.source,
            "variant": self.variant,
            "precision": self.precision,
            "device": self.device,
            "chosen_because": self.reason,
            "files": [f.to_dict() for f in self.entry.files],
            "command": self.command,
            "seconds": round(self.seconds, 3),
        }


def package_triton(
    info: Run, cfg: TritonConfig, *, force: bool, say: StepFn | None = None
) -> TritonResult:
    """Write ``RUN/triton/<model>`` from the chosen ONNX artifact (``serve.choice.choose``:
    the same file ``tlx serve`` would serve).

    Raises:
        InputFileError: the model folder exists without ``force``; bad manifest entry.
        UsageError: unknown ``variant`` (or not an ONNX artifact).
        IntegrityError: the artifact's hash differs from the manifest.
        GateFailed: a config fails Triton's schema, or the copy fails its ORT check.
        EnvironmentUnavailable: tritonclient is not installed.
    """
    step = say or (lambda _msg: None)
    t0 = time.perf_counter()
    run = info.run_dir
    repo = run / TRITON_DIR
    dest = repo / cfg.model_name
    if (dest.exists() or dest.is_symlink()) and not force:
        raise InputFileError(f"{dest} already exists; pass --force to overwrite it")
    clean_stale_temps(repo)
    choice = choose(  # the opened run: its manifest and hashes are reused
        info, device=cfg.device, variant=cfg.variant, formats=("onnx",), check_available=False
    )
    art = choice.artifact
    step(f"triton: {art.name} ({choice.reason})")
    spec = _spec(art, cfg)
    kind = "gpu" if cfg.device.startswith("cuda") else "cpu"
    texts = {k: render_config(spec, k) for k in KINDS}
    for k, text in texts.items():  # parse and check all before anything is written
        check_config(parse_config(text, where=f"configs/{k}.pbtxt"), spec, k, where=k)
    labels = _labels(info, art.num_classes)
    src = art.verified_path()  # hash + ONNX safety checks before the copy
    with atomic_dir(dest) as tmp:
        (tmp / "1").mkdir()
        (tmp / "configs").mkdir()
        shutil.copyfile(src, tmp / "1" / MODEL_FILE)
        if sha256_file(tmp / "1" / MODEL_FILE) != art.sha256:
            raise GateFailed(f"{src} changed while it was copied; run the export again")
        (tmp / LABELS_FILE).write_text(labels, encoding="utf-8")
        for k, text in texts.items():
            (tmp / "configs" / f"{k}.pbtxt").write_text(text, encoding="utf-8")
        (tmp / "config.pbtxt").write_text(texts[kind], encoding="utf-8")
        step("triton: running the copy on ONNX Runtime CPU (batch 1 and 2)")
        _check_model(tmp / "1" / MODEL_FILE, spec, art.num_classes)
    command = docker_command(repo, kind)
    write_text(repo / "README.md", _readme(spec, art, choice.reason, repo, kind))
    entry = _entry(run, dest, art, spec, cfg.device, choice.reason)
    return TritonResult(
        repository=repo,
        model_dir=dest,
        source=art.name,
        variant=art.metadata.get("variant"),
        precision=art.precision,
        device=cfg.device,
        reason=choice.reason,
        entry=entry,
        command=command,
        seconds=time.perf_counter() - t0,
    )


def _spec(art: Artifact, cfg: TritonConfig) -> ModelSpec:
    entry = dict(art.metadata.get("entry") or {})
    entry["name"] = art.name
    fixed = (art.image_size, art.image_size) if art.fixed_hw else None
    inputs, outputs, fixed_batch = tensors_from_manifest(entry, fixed_hw=fixed)
    if fixed_batch is not None:
        # A fixed-batch export cannot be batched by the server: Triton sees the full shape.
        inputs = tuple(type(t)(t.name, t.data_type, (fixed_batch, *t.dims)) for t in inputs)
        outputs = tuple(type(t)(t.name, t.data_type, (fixed_batch, *t.dims)) for t in outputs)
    return ModelSpec(
        name=cfg.model_name,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=0 if fixed_batch is not None else cfg.max_batch,
        precision=art.precision,
        instances=cfg.instances or 1,  # the server's cores are unknown here
        max_queue_delay_us=cfg.max_queue_delay_us,
        threads=cfg.threads,
    )


def _labels(info: Run, num_classes: int) -> str:
    """labels.txt: the class names in output order, one per line (Triton's classification)."""
    names = info.class_names
    if len(names) != num_classes:
        raise InputFileError(f"{len(names)} class names for {num_classes} outputs in train.json")
    for name in names:
        if not name.strip() or "\n" in name or "\r" in name:
            raise InputFileError(
                f"class name {name!r} cannot be a line of {LABELS_FILE}; rename it in train.json"
            )
    return "".join(f"{n}\n" for n in names)


def _check_model(path: Path, spec: ModelSpec, num_classes: int) -> None:
    """The copy loads on ORT CPU with the config's names and shapes and gives finite logits."""
    from exporter.export.common import first_line
    from exporter.runtimes.ort_sessions import cpu_session

    try:
        session = cpu_session(path)
        got = {i.name for i in session.get_inputs()}
        want = {t.name for t in spec.inputs}
        if got != want:
            raise GateFailed(f"config inputs {sorted(want)} but the model has {sorted(got)}")
        for batch in ((1,), (2,)) if spec.batched else ((),):
            feed = {t.name: np.zeros((*batch, *concrete(t.dims)), np.float32) for t in spec.inputs}
            (out,) = session.run([spec.outputs[0].name], feed)
            if out.shape[-1] != num_classes or not np.isfinite(out).all():
                raise GateFailed(f"output shape {out.shape} or non-finite values")
    except GateFailed as exc:
        raise GateFailed(f"triton/{spec.name}/1/{MODEL_FILE}: {exc}; not written") from exc
    except Exception as exc:  # ORT raises its own types for a wrong name or shape
        raise GateFailed(
            f"triton/{spec.name}/1/{MODEL_FILE} does not run with its config.pbtxt "
            f"({first_line(exc)}); not written"
        ) from exc


def docker_command(repo: Path, kind: str, *, config_name: str | None = None) -> str:
    """The one-line ``docker run ... tritonserver`` command serving ``repo`` (mounted at
    /models) on ``kind`` (``gpu`` adds ``--gpus=all``), with ``configs/<config_name>.pbtxt``
    instead of ``config.pbtxt`` when given."""
    gpus = "--gpus=all " if kind == "gpu" else ""
    mount = shlex.quote(f"{repo.resolve()}:/models")
    pick = f" --model-config-name={config_name}" if config_name else ""
    return (
        f"docker run --rm {gpus}-p 8000:8000 -p 8001:8001 -p 8002:8002 -v {mount} "
        f"{TRITON_IMAGE} tritonserver --model-repository=/models{pick}"
    )


def _readme(spec: ModelSpec, art: Artifact, reason: str, repo: Path, kind: str) -> str:
    entry = art.metadata.get("entry") or {}
    t_in, t_out = spec.inputs[0], spec.outputs[0]
    other = "gpu" if kind == "cpu" else "cpu"
    return "\n".join(
        [
            f"# Triton model repository: {spec.name}",
            "",
            f"Made by `tlx export RUN --format triton` from `{art.name}` ({art.precision}; "
            f"{reason}); sha256 `{art.sha256}`.",
            "",
            f"Serve it ({kind}, `config.pbtxt`) with the official container:",
            "",
            f"    {docker_command(repo, kind)}",
            "",
            f"On {'a GPU' if other == 'gpu' else 'the CPU'} (`configs/{other}.pbtxt`"
            f"{', TensorRT accelerator' if other == 'gpu' else ''}):",
            "",
            f"    {docker_command(repo, other, config_name=other)}",
            "",
            f"The GPU config caches TensorRT engines under {TRT_CACHE_ROOT}/{spec.name} in the "
            "container: mount a volume there to keep them across restarts. The container's "
            "ONNX Runtime must support the model's ONNX opset "
            f"({entry.get('opset', 'see manifest.json')}).",
            "",
            f"Input `{t_in.name}`: {t_in.data_type} {list(t_in.dims)} per image, NCHW: "
            f"{_preprocessing_text(art)}. Output `{t_out.name}`: {t_out.data_type} "
            f"{list(t_out.dims)} logits; ask for `class_count` in a request to get class names "
            f"from {LABELS_FILE}.",
            "",
        ]
    )


def _preprocessing_text(art: Artifact) -> str:
    pre = (art.metadata.get("shared") or {}).get("preprocessing") or {}
    if not pre:
        return "the preprocessing recorded in manifest.json"
    return (
        f"RGB, shorter side resized to {pre.get('resize_size')} ({pre.get('interpolation')}), "
        f"center crop {pre.get('image_size')}, scaled to [0, 1], minus mean {pre.get('mean')}, "
        f"divided by std {pre.get('std')} (manifest.json: metadata.preprocessing)"
    )


def _entry(
    run: Path, dest: Path, art: Artifact, spec: ModelSpec, device: str, reason: str
) -> ArtifactEntry:
    from exporter.export.metadata import utc_now

    rel = dest.relative_to(run)
    files = [f"{rel}/1/{MODEL_FILE}", f"{rel}/config.pbtxt", f"{rel}/{LABELS_FILE}"]
    files += [f"{rel}/configs/{k}.pbtxt" for k in KINDS] + [f"{TRITON_DIR}/README.md"]
    entry = art.metadata.get("entry") or {}
    return ArtifactEntry(
        name=str(rel.as_posix()),
        format=TRITON,
        files=[FileRecord.of(run, f) for f in files],
        precision=art.precision,
        variant=art.metadata.get("variant"),
        inputs=list(entry.get("inputs") or []),
        outputs=list(entry.get("outputs") or []),
        input_constraints=dict(entry.get("input_constraints") or {}),
        extra={
            "source_artifact": art.name,
            "source_sha256": art.sha256,
            "target_device": device,
            "chosen_because": reason,
            "max_batch_size": spec.max_batch_size,
            "instances": spec.instances,
            "threads_per_instance": spec.threads,
            "opset": entry.get("opset"),
            "exporter": "tlx export --format triton",
            "exported_at": utc_now(),
        },
    )
