"""``tlx inspect ARTIFACT|RUN``: what an artifact is, read without running it.

Every file is hash-checked against ``manifest.json`` first. Nothing here executes model
code: ONNX graphs are parsed with ``onnx`` (after :func:`check_onnx_file`), and the metadata of
TorchScript / .pt2 archives is read straight from their zip members, never via
``torch.jit.load`` (which has no safe mode, pytorch #77573).
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.errors import InputFileError, IntegrityError
from exporter.core.manifest import (
    MANIFEST_NAME,
    ArtifactEntry,
    check_artifact,
    load_manifest,
)
from exporter.export.metadata import METADATA_FILE, from_onnx_props

if TYPE_CHECKING:
    from rich.console import Console

    from exporter.core.runfolder import Run

# Shown first, in this order; everything else in the metadata follows alphabetically.
_META_ORDER = (
    "format",
    "precision",
    "variant",
    "model_shape",
    "judged_by",
    "exporter",
    "opset",
    "num_classes",
    "class_names",
    "dataset",
    "best_val_accuracy",
    "preprocessing",
    "source_sha256",
    "exported_at",
)
# Signature keys are printed in their own table.
_SIGNATURE_KEYS = {"inputs", "outputs", "input_names", "output_names"}


def inspect_target(target: str | Path, *, console: Console) -> dict[str, Any]:
    """Print a run folder's summary or one artifact's metadata; return what was printed.

    Args:
        target: a run folder, or a file listed in its ``manifest.json``.
        console: where to print.

    Raises:
        InputFileError: the target is missing, not listed in a manifest, or unreadable.
        IntegrityError: a file's sha256 does not match the manifest.
    """
    path = Path(target)
    if path.is_dir():
        return inspect_run(path, console=console)
    if not path.exists():
        raise InputFileError(f"{path} does not exist: pass a run folder or one of its artifacts")
    return inspect_artifact(path, console=console)


def _find_entry(path: Path) -> tuple[Path, ArtifactEntry]:
    run = path.parent
    if not (run / MANIFEST_NAME).is_file():
        raise InputFileError(
            f"no {MANIFEST_NAME} beside {path}: tlx inspects only artifacts it can hash-check; "
            "keep the file in its run folder (or run `tlx export RUN`)"
        )
    manifest = load_manifest(run)
    for entry in manifest.artifacts.values():
        if any(Path(rec.path) == Path(path.name) for rec in entry.files[:1]):
            return run, entry
    raise InputFileError(
        f"{path} is not listed in {run / MANIFEST_NAME}; re-export with `tlx export {run} --force`"
    )


def read_artifact(path: Path) -> dict[str, Any]:
    """Hash-check ``path`` against its manifest and read its embedded metadata and signature.

    Returns:
        ``{"entry": ArtifactEntry, "metadata": dict, "inputs": [...], "outputs": [...],
        "files": [{"path", "bytes", "sha256"}], "opset": int|None, "ops": {op: count}}``.
    """
    run, entry = _find_entry(Path(path))
    main = check_artifact(run, entry)
    info: dict[str, Any] = {
        "entry": entry,
        "files": [rec.to_dict() for rec in entry.files],
        "opset": entry.extra.get("opset"),
        "ops": {},
    }
    if entry.format == "onnx":
        info.update(_read_onnx(main))
    elif entry.format in ("torchscript", "pt2"):
        meta = read_archive_metadata(main)
        info.update(
            metadata=meta,
            inputs=meta.get("inputs", entry.inputs),
            outputs=meta.get("outputs", entry.outputs),
        )
    else:
        info.update(metadata={}, inputs=entry.inputs, outputs=entry.outputs)
    return info


def read_archive_metadata(path: Path) -> dict[str, Any]:
    """The ``tlx_metadata.json`` extra file of a TorchScript or .pt2 zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith(f"/extra/{METADATA_FILE}")), None)
            if member is None:
                raise InputFileError(
                    f"{path} has no embedded {METADATA_FILE}: not exported by tlx; re-export "
                    "it with `tlx export RUN --force`"
                )
            return dict(json.loads(zf.read(member).decode("utf-8")))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise InputFileError(
            f"{path} is not a readable TorchScript/.pt2 archive ({exc}); re-export it with "
            "`tlx export RUN --force`"
        ) from exc


def _read_onnx(path: Path) -> dict[str, Any]:
    import onnx

    from exporter.core.onnx_safety import check_onnx_file, load_onnx_graph

    check_onnx_file(path)
    model = load_onnx_graph(path)
    props = {p.key: p.value for p in model.metadata_props}

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
            out.append({"name": v.name, "shape": dims, "dtype": dtype})
        return out

    ops: Counter[str] = Counter(n.op_type for n in model.graph.node)
    for func in model.functions:
        ops.update(n.op_type for n in func.node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "metadata": from_onnx_props(props),
        "inputs": describe(model.graph.input),
        "outputs": describe(model.graph.output),
        "opset": opset,
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }


def inspect_artifact(path: Path, *, console: Console) -> dict[str, Any]:
    """Print one artifact: metadata, signature, files and (ONNX) opset and operators."""
    from rich.table import Table

    info = read_artifact(path)
    entry: ArtifactEntry = info["entry"]
    meta: dict[str, Any] = info["metadata"]
    console.print(
        f"[bold]{path}[/]  format {entry.format}, precision {entry.precision}, "
        f"hash ok (manifest.json)",
        markup=True,
    )

    table = Table(title="metadata", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    keys = [k for k in _META_ORDER if k in meta]
    keys += sorted(k for k in meta if k not in _META_ORDER and k not in _SIGNATURE_KEYS)
    for k in keys:
        v = meta[k]
        table.add_row(k, v if isinstance(v, str) else json.dumps(v))
    console.print(table)

    sig = Table(title="signature")
    for col in ("io", "name", "shape", "dtype"):
        sig.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            sig.add_row(kind[:-1], str(t["name"]), str(t["shape"]), str(t["dtype"]))
    console.print(sig)

    files = Table(title="files")
    for col in ("path", "bytes", "MB", "sha256"):
        files.add_column(col, justify="right" if col in ("bytes", "MB") else "left")
    for f in info["files"]:
        files.add_row(f["path"], f"{f['bytes']:,}", f"{f['bytes'] / 1e6:.1f}", f["sha256"])
    console.print(files)

    if entry.format == "onnx":
        console.print(
            f"opset {info['opset']}, IR version {info.get('ir_version')}, producer "
            f"{info.get('producer')}",
            markup=False,
        )
        ops = Table(title="operators")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for op, n in info["ops"].items():
            ops.add_row(op, str(n))
        console.print(ops)
    return info


def inspect_run(run: Run | str | Path, *, console: Console) -> dict[str, Any]:
    """Print a run's training summary and a table of every artifact with its hash status.

    ``run`` is the folder or the opened run (then nothing is read or hashed twice).

    Raises:
        IntegrityError: after printing, when any listed file differs from the manifest.
    """
    from exporter.core.runfolder import open_run

    info = open_run(run)
    run = info.run_dir  # the folder as given: messages name it as before
    dataset = (info.record.get("dataset") or {}).get("name")
    console.print(f"[bold]run {run}[/]", markup=True)
    console.print(_training_table(info, dataset))
    result: dict[str, Any] = {
        "run_dir": str(run),
        "dataset": dataset,
        "best_val_accuracy": info.best_val_accuracy,
        "artifacts": {},
    }
    if not info.has_manifest:
        console.print(f"no {MANIFEST_NAME} yet: run `tlx export {run}`", markup=False)
        return result
    manifest = info.manifest
    try:
        info.check_file(manifest.source)
        source_ok = True
    except IntegrityError:
        source_ok = False
    table, result["artifacts"] = _artifact_table(info, manifest)
    console.print(table)
    if not source_ok:
        console.print(
            f"{manifest.source.path} changed since export: the artifacts are stale; "
            f"re-export with `tlx export {run} --force`",
            markup=False,
        )
    bad = [name for name, a in result["artifacts"].items() if a["hash"] != "ok"]
    if bad:
        raise IntegrityError(
            f"{', '.join(str(run / b) for b in bad)} do not match manifest.json (sha256/size "
            f"differ); re-export with `tlx export {run} --force` or restore the files"
        )
    return result


def _training_table(info: Any, dataset: str | None) -> Any:
    from rich.table import Table

    best = info.best_val_accuracy
    summary = Table(show_header=False, title="training")
    summary.add_column("key")
    summary.add_column("value", overflow="fold")
    summary.add_row("dataset", str(dataset))
    summary.add_row("classes", f"{info.num_classes}: {', '.join(info.class_names)}")
    summary.add_row("image size", f"{info.preprocessing.image_size} px")
    summary.add_row("best val accuracy", "n/a" if best is None else f"{best:.4f}")
    return summary


def _artifact_table(run: Run, manifest: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The manifest's artifacts with their hash status (``ok`` or ``MISMATCH``)."""
    from rich.table import Table

    table = Table(title="artifacts (manifest.json)")
    for col in ("file", "format", "precision", "MB", "opset", "exporter", "exported", "hash"):
        # The hash status must stay readable in a narrow terminal; other columns may wrap.
        table.add_column(
            col,
            justify="right" if col in ("MB", "opset") else "left",
            no_wrap=col in ("hash", "file"),
            min_width=8 if col == "hash" else None,
            overflow="fold",
        )
    found: dict[str, dict[str, Any]] = {}
    for name, entry in manifest.artifacts.items():
        try:
            run.check_files(entry.files)
            status = "ok"
        except IntegrityError:
            status = "MISMATCH"
        size = sum(f.bytes for f in entry.files)
        table.add_row(
            name,
            entry.format,
            _precision_label(entry),
            f"{size / 1e6:.1f}",
            str(entry.extra.get("opset") or "-"),
            str(entry.extra.get("exporter", "")),
            str(entry.extra.get("exported_at", "")),
            status,
        )
        found[name] = {"format": entry.format, "bytes": size, "hash": status}
    return table, found


def _precision_label(entry: Any) -> str:
    """The precision, plus what a pruned variant kept (``int8, pruned 50%: 1,024 fc``)."""
    prune = entry.extra.get("prune") if isinstance(entry.extra, dict) else None
    if not isinstance(prune, dict) or "ratio" not in prune:
        return entry.precision
    shape = prune.get("shape") or {}
    conv = shape.get("conv") or []
    fc = (shape.get("fc") or ["?"])[0]
    widths = f"conv {conv[0]}..{conv[-1]}, fc {fc}" if conv else f"fc {fc}"
    return f"{entry.precision}, pruned {float(prune['ratio']):.0%} ({widths})"
