"""Settings of ``tlx export``, including the ``triton`` and ``kserve`` formats (packaged by
``exporter.deploy``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from exporter.core.choices import ALL, EXPORT_PRECISIONS
from exporter.core.config.common import nested, opt
from exporter.core.config.serve import TritonConfig
from exporter.core.errors import UsageError, shown

# The model formats, in the order they are exported (``--format all``: these three).
EXPORT_FORMATS = ("onnx", "torchscript", "pt2")
TRITON = "triton"  # not a model format: it packages an artifact the others (or optimize) made
KSERVE = "kserve"  # Kubernetes manifests serving the Triton repository (written first if missing)
EXPORTER_CHOICES = ("dynamo", "legacy")
# Newest opset torch.onnx can emit (torch.onnx._constants.ONNX_MAX_OPSET in torch 2.10-2.14);
# the dynamo exporter authors at opset 18 and up-converts, checked to round-trip VGG16 on ORT.
DEFAULT_OPSET = 23
# The dynamo exporter's own opset (torchlib); older opsets need a lossy down-conversion.
MIN_DYNAMO_OPSET = 18
# The TorchScript-based exporter stops at opset 20 (ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET).
MAX_LEGACY_OPSET = 20
# Where the pods read the Triton repository: schemes both KServe's storage initializer and a
# plain tritonserver (its own cloud repositories, or a mounted claim) can open.
STORAGE_SCHEMES = ("s3", "gs", "pvc")
# A Kubernetes object name (RFC 1035 label): an InferenceService's name is also a host name.
K8S_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_REPLICAS = 1000


@dataclass(frozen=True)
class KServeConfig:
    """Settings of ``tlx export --format kserve`` (manifests in RUN/kserve); each field's help
    is its option's (``name``: the InferenceService / Deployment name)."""

    storage_uri: str | None = opt(
        None,
        help="kserve (required): where the cluster reads the copy of RUN/triton "
        "(s3://bucket/path, gs://bucket/path or pvc://claim/path).",
    )
    name: str | None = opt(
        None, flags=("--k8s-name",), help="kserve: the object name (default: --model-name)."
    )
    min_replicas: int = opt(1, help="kserve: the autoscaler's lower bound.")
    max_replicas: int = opt(4, help="kserve: the autoscaler's upper bound.")

    def __post_init__(self) -> None:
        if self.storage_uri is not None:
            scheme, sep, rest = self.storage_uri.partition("://")
            if not sep or scheme not in STORAGE_SCHEMES or not rest.strip("/"):
                raise UsageError(
                    f"--storage-uri {shown(self.storage_uri)}: give "
                    + ", ".join(f"{s}://..." for s in STORAGE_SCHEMES)
                    + " (the folder holding the copy of RUN/triton)"
                )
        if self.name is not None and not K8S_NAME_RE.match(self.name):
            raise UsageError(
                f"--k8s-name {shown(self.name)}: use 1-63 lower-case letters, digits and '-', "
                "starting with a letter (a Kubernetes name)"
            )
        if not (
            0 <= self.min_replicas <= self.max_replicas and 1 <= self.max_replicas <= MAX_REPLICAS
        ):
            raise UsageError(
                f"--min-replicas {self.min_replicas} / --max-replicas {self.max_replicas}: give "
                f"0 <= min <= max and 1 <= max <= {MAX_REPLICAS}"
            )


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``tlx export``.

    Each field's help is its option's; ``seed`` seeds the random check inputs. ``triton`` and
    ``kserve`` are the settings of those formats (not part of ``all``: they package an
    artifact the other formats and ``tlx optimize`` made, after verify and bench:
    :func:`exporter.deploy.package.package_run`).
    """

    formats: tuple[str, ...] = opt(
        EXPORT_FORMATS,
        flags=("--format", "-f"),
        choices=(*EXPORT_FORMATS, TRITON, KSERVE, ALL),
        case_sensitive=False,
        show_default=f"all: {', '.join(EXPORT_FORMATS)}",
        help="Artifact format; repeat for several. triton: a Triton model repository in "
        "RUN/triton from the best verified ONNX artifact (not part of all). kserve: Kubernetes "
        "manifests in RUN/kserve serving that repository (written first if missing).",
    )
    opset: int | None = opt(
        None,
        help=f"ONNX opset (default: {DEFAULT_OPSET} for dynamo, {MAX_LEGACY_OPSET} for the "
        "legacy exporter).",
    )
    batch_size: int = opt(
        8, help="Largest batch every artifact is checked at; the fixed batch with --static-batch."
    )
    static_batch: bool = opt(
        False,
        flags=("--static-batch",),
        help="Export ONNX/.pt2 with a fixed batch of --batch-size.",
    )
    precision: str = opt(
        "fp32",
        choices=EXPORT_PRECISIONS,
        case_sensitive=False,
        help="fp16 writes model.fp16.onnx (fp16 compute, fp32 inputs/outputs) instead of "
        "model.onnx; TorchScript and .pt2 stay fp32.",
    )
    exporter: str = opt(
        "dynamo",
        choices=EXPORTER_CHOICES,
        case_sensitive=False,
        help="ONNX exporter: dynamo (torch.export based, default) or legacy (TorchScript "
        "based; fails on VGG16 at 32 px).",
    )
    force: bool = opt(False, flags=("--force",), help="Overwrite artifacts that already exist.")
    seed: int = 0
    # A packaged repository's threads are the tuned plan's or the backend's: no --threads.
    triton: TritonConfig = field(
        default_factory=TritonConfig,
        metadata=nested(
            prefix="triton: ",
            skip=("threads",),
            instances="Model instances (instance_group count; default: RUN/tune.json's plan, "
            "else 1).",
        ),
    )
    kserve: KServeConfig = field(default_factory=KServeConfig)

    def __post_init__(self) -> None:
        # Normalised here ("all", "onnx,pt2", any order → known formats in export order), so
        # the report and every stage see the same tuple.
        formats = parse_formats(self.formats)
        object.__setattr__(self, "formats", formats)
        if self.precision not in EXPORT_PRECISIONS:
            raise UsageError(
                f"--precision {self.precision!r}: choose from {', '.join(EXPORT_PRECISIONS)}"
            )
        if self.exporter not in EXPORTER_CHOICES:
            raise UsageError(
                f"--exporter {self.exporter!r}: choose from {', '.join(EXPORTER_CHOICES)}"
            )
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.precision == "fp16" and "onnx" not in formats:
            raise UsageError("--precision fp16 applies to ONNX only: add --format onnx (or all)")
        if KSERVE in formats and self.kserve.storage_uri is None:
            raise UsageError(
                "--format kserve needs --storage-uri (s3://, gs:// or pvc://): where the "
                "cluster reads the Triton repository from"
            )

    @property
    def model_formats(self) -> tuple[str, ...]:
        """The formats ``export_run`` writes (the others are packaged by ``exporter.deploy``)."""
        return tuple(f for f in self.formats if f in EXPORT_FORMATS)


def parse_formats(spec: str | tuple[str, ...] | list[str] | Any) -> tuple[str, ...]:
    """``"all"``, ``"onnx,pt2"`` or a sequence → a tuple of known formats in export order.

    Raises:
        UsageError: an unknown or empty format.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        names.extend(p.strip().lower() for p in str(item).split(",") if p.strip())
    if not names:
        raise UsageError(
            "--format: give at least one of onnx, torchscript, pt2, triton, kserve or all"
        )
    known = (*EXPORT_FORMATS, TRITON, KSERVE)
    unknown = [n for n in names if n not in (*known, ALL)]
    if unknown:
        raise UsageError(
            f"--format {unknown[0]!r} is unknown; choose from {', '.join(known)} or all"
        )
    # "all" is the three model formats; triton ships one of them and kserve serves triton's
    # repository, so they come last.
    chosen = set(EXPORT_FORMATS) if ALL in names else set()
    chosen.update(names)
    return tuple(f for f in known if f in chosen)


@dataclass(frozen=True)
class InspectConfig:
    """Settings of ``tlx inspect`` without a target (the model itself); each field's help is
    its option's."""

    num_classes: int = opt(10, min=1, help="Head size when inspecting the model.")
    weights: str = opt(
        "none",
        help="imagenet, a local .pth/.safetensors, or none. The architecture and counts do not "
        "depend on it, so 'none' (offline) is the default here.",
    )
    full: bool = opt(
        True, flags=("--full/--brief",), help="Print the whole module tree, or only the counts."
    )
