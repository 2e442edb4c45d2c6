"""VGG16 for transfer learning: build, load weights, freeze, replace the head, checkpoint I/O.

The seed recipe, step by step: torchvision's pretrained VGG16, every parameter of
``features`` frozen, ``classifier[6]`` replaced by ``Linear(4096, num_classes)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core.errors import EnvironmentUnavailable, InputFileError, UsageError
from exporter.core.manifest import FileRecord
from exporter.model.shape import FC_WIDTH, VGGShape

if TYPE_CHECKING:
    import torch
    from torch import nn

    from exporter.core.runfolder import Run

IMAGENET = "imagenet"
NO_WEIGHTS = "none"
HEAD_NAME = "classifier.6"


def build_vgg16(*, num_classes: int, weights: str | os.PathLike[str] = IMAGENET) -> nn.Module:
    """Build torchvision's VGG16 with a fresh ``num_classes`` head and frozen ``features``.

    Args:
        weights: ``"imagenet"`` (torchvision's ``VGG16_Weights.IMAGENET1K_V1`` through its own
            download and cache), a path to a torchvision-format state dict (``.pth``/``.pt``,
            read with ``weights_only=True``) or ``.safetensors``, or ``"none"`` for random init.

    Raises:
        EnvironmentUnavailable: ImageNet weights are not cached and cannot be downloaded.
        InputFileError: the weights file is missing, unsafe, corrupt or not VGG16.
    """
    if num_classes < 1:
        raise UsageError(f"num_classes must be >= 1, got {num_classes}")
    from torch import nn
    from torchvision.models import VGG16_Weights, vgg16

    spec = str(weights)
    if spec == IMAGENET:
        try:
            model = vgg16(weights=VGG16_Weights.IMAGENET1K_V1, progress=False)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad cache: RuntimeError
            raise EnvironmentUnavailable(
                "cannot load ImageNet VGG16 weights (not in the torch hub cache and the download "
                f"failed: {exc.__class__.__name__}: {exc}). Pass --weights PATH to a local "
                "torchvision VGG16 state dict (.pth or .safetensors), or --weights none for "
                "random init."
            ) from exc
    else:
        model = vgg16(weights=None)
        if spec != NO_WEIGHTS:
            _load_backbone_file(model, Path(spec))
    for p in model.features.parameters():
        p.requires_grad = False
    model.classifier[6] = nn.Linear(FC_WIDTH, num_classes)  # trainable
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)`` (never retried).

    Raises:
        InputFileError: missing, unreadable, refused by the safe unpickler, or not a state dict.
    """
    import torch

    _require_safe_torch_load(torch.__version__)
    if not path.is_file():
        raise InputFileError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure of an untrusted file is the user's input problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputFileError(
            f"cannot read weights file {path}: {first[:300]} (tlx reads only safetensors or "
            "plain tensor state dicts; pickles that run code are refused)"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InputFileError(f"{path} is not a state dict of tensors")
    return _strip_wrapper_prefix(state)


# Prefixes that wrappers add to every key: DataParallel/DDP ("module."), Lightning ("model.").
WRAPPER_PREFIXES = ("module.", "model.")


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix shared by *every* key (repeatedly: ``module.model.`` too)."""
    changed = True
    while state and changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


MIN_SAFE_TORCH = (2, 10)


def _require_safe_torch_load(version: str) -> None:
    """Refuse to unpickle on torch < 2.10: earlier ``weights_only`` had code-execution bypasses."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if m and (int(m.group(1)), int(m.group(2))) < MIN_SAFE_TORCH:
        raise EnvironmentUnavailable(
            f"torch {version} is too old to read untrusted weight files safely "
            "(weights_only bypasses fixed in 2.6 and 2.10); install torch>=2.10"
        )


def _load_backbone_file(model: nn.Module, path: Path) -> None:
    """Load a VGG16 state dict into ``model``; the head is loaded only if its shape matches."""
    state = read_state_dict(path)
    own = model.state_dict()
    head_keys = {f"{HEAD_NAME}.weight", f"{HEAD_NAME}.bias"}
    body = {k: v for k, v in state.items() if k not in head_keys}
    missing = sorted(set(own) - head_keys - set(body))
    unexpected = sorted(set(body) - set(own))
    if missing or unexpected:
        raise InputFileError(
            f"{path} is not a torchvision VGG16 state dict (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    for key, tensor in body.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise InputFileError(
                f"{path}: tensor {key} has shape {tuple(tensor.shape)}, VGG16 expects "
                f"{tuple(own[key].shape)}"
            )
        if not tensor.is_floating_point():
            raise InputFileError(f"{path}: tensor {key} has dtype {tensor.dtype}, expected float")
    if head_keys <= set(state) and all(state[k].shape == own[k].shape for k in head_keys):
        body.update({k: state[k] for k in head_keys})
    model.load_state_dict(body, strict=False)


def unfreeze_from(model: nn.Module, start: int) -> list[str]:
    """Make ``features[start:]`` trainable; return the names of the parameters flipped."""
    flipped = []
    for name, p in model.features.named_parameters():
        if int(name.split(".")[0]) >= start and not p.requires_grad:
            p.requires_grad = True
            flipped.append(f"features.{name}")
    return flipped


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of one block of the model."""

    block: str
    total: int
    trainable: int

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


def count_parameters(model: nn.Module) -> list[ParamCount]:
    """Counts for ``features``, ``classifier``, ``classifier[6]`` and the whole model."""

    def count(mod: nn.Module, name: str) -> ParamCount:
        params = list(mod.parameters())
        return ParamCount(
            name,
            sum(p.numel() for p in params),
            sum(p.numel() for p in params if p.requires_grad),
        )

    return [
        count(model.features, "features"),
        count(model.classifier, "classifier"),
        count(model.classifier[6], "classifier[6]"),
        count(model, "total"),
    ]


def load_trained_weights(model: nn.Module, path: Path) -> None:
    """Load a trained ``model.safetensors`` into ``model``; shapes and keys must match exactly."""
    state = read_state_dict(path)
    own = model.state_dict()
    if set(state) != set(own):
        missing = sorted(set(own) - set(state))[:3]
        extra = sorted(set(state) - set(own))[:3]
        raise InputFileError(f"{path}: keys do not match VGG16 (missing {missing}, extra {extra})")
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise InputFileError(
                f"{path}: tensor {key} has shape {tuple(tensor.shape)}, expected "
                f"{tuple(own[key].shape)}"
            )
        if tensor.dtype != own[key].dtype:
            raise InputFileError(f"{path}: tensor {key} has dtype {tensor.dtype}, expected float32")
    model.load_state_dict(state, strict=True)


def load_reference_model(info: Run, *, expected: FileRecord | None = None) -> nn.Module:
    """The trained eager fp32 model, rebuilt from ``model.safetensors`` (eval mode, CPU); with
    ``expected`` (the manifest's ``source`` record) the file must match its size and sha256
    (the opened run hashes it once per command)."""
    if expected is not None:
        info.check_file(expected)
    model = VGGShape.full(info.num_classes).build()  # no random init of 134M weights
    load_trained_weights(model, info.weights_path)
    return model.eval()
