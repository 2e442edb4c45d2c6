"""``RUN/MODEL_CARD.md``: the run's reports as a Hugging Face model card.

YAML front matter (license, library_name, tags, datasets, metrics) then the sections users
know from the Hub (https://huggingface.co/docs/hub/model-cards): intended use, training,
metrics, every shipped artifact × runtime with its parity verdict (verify.json), speed on
the machine bench ran on (bench.json), limitations, provenance. Numbers are copied from the
reports as they are (no rounding), so the card and the JSON agree exactly. ``tlx bench`` and
``tlx demo`` write it; ``tlx sign`` refreshes it before signing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.core.fsio import write_text
from exporter.core.runfolder import BENCH_JSON, CONFUSION_PNG, SIGNATURE_NAME, VERIFY_JSON
from exporter.core.runfolder import MODEL_CARD_MD as MODEL_CARD_NAME
from exporter.core.runfolder import PROVENANCE_JSON as PROVENANCE_NAME
from exporter.sign.scope import read_report

if TYPE_CHECKING:
    from exporter.core.manifest import Manifest
    from exporter.core.runfolder import Run

# /proc/cpuinfo flag → the name users know, most capable first.
_ISA_FLAGS = (
    ("amx_tile", "AMX"),
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx512f", "AVX-512"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx2", "AVX2"),
    ("sse4_2", "SSE4.2"),
)


def number(value: Any) -> str:
    """A report value as the JSON holds it (``str`` of a float is its shortest round trip)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def write_model_card(run: Run) -> Path:
    """Write ``MODEL_CARD.md`` from the run's train.json, manifest, verify.json and bench.json
    (and ``confusion_matrix.png`` when train.json has the matrix)."""
    run_dir = run.run_dir
    matrix = run.record.get("confusion_matrix")
    picture = _write_confusion(run_dir / CONFUSION_PNG, matrix, run.class_names) if matrix else None
    manifest = run.manifest if run.has_manifest else None
    verify = read_report(run_dir / VERIFY_JSON)
    bench = read_report(run_dir / BENCH_JSON)
    parts = [
        _front_matter(run, manifest),
        f"# {run_dir.name}: VGG16 image classifier\n\n"
        f"A torchvision VGG16 fine-tuned by transfer learning and exported by tlx "
        f"{__version__}. Every number below is copied from the run's reports "
        "(train.json, verify.json, bench.json).\n",
        _intended_use(run),
        _training(run),
        _metrics(run, picture),
        _artifacts(manifest, verify),
        _speed(bench),
        _limitations(manifest, verify, bench),
        _provenance(run_dir),
    ]
    path = run_dir / MODEL_CARD_NAME
    write_text(path, "\n".join(parts))
    return path


def _front_matter(run: Run, manifest: Manifest | None) -> str:
    dataset = (run.record.get("dataset") or {}).get("name") or run.data_config.get("source")
    formats = sorted({a.format for a in manifest.artifacts.values()}) if manifest else []
    tags = ["image-classification", "vgg16", "transfer-learning", "tlx", *formats]
    lines = ["---", "license: other", "library_name: onnx", "pipeline_tag: image-classification"]
    lines += ["tags:", *(f"- {t}" for t in tags)]
    lines += ["datasets:", f"- {dataset}", "metrics:", "- accuracy", "---", ""]
    return "\n".join(lines)


def _intended_use(run: Run) -> str:
    pre = run.preprocessing
    classes = ", ".join(run.class_names)
    return (
        "## Intended use\n\n"
        f"Classify {pre.image_size}x{pre.image_size} {pre.channel_order} images into "
        f"{run.num_classes} classes: {classes}. Inputs are resized ({pre.resize}) and "
        f"normalised with mean {list(pre.mean)} and std {list(pre.std)} "
        "(recorded in manifest.json; `exporter.load` and `tlx serve` apply it). Out of scope: "
        "images unlike the training data, other classes, and any use where a wrong label "
        "harms someone without a human check.\n"
    )


def _training(run: Run) -> str:
    rec, data = run.record, run.data_config
    dataset = rec.get("dataset") or {}
    recipe = rec.get("recipe") or {}
    model = (rec.get("config") or {}).get("model") or {}
    # Images used (train.json's dataset block), else the sizes asked for (its config).
    train, val = (dataset.get(k, data.get(k)) for k in ("train_size", "val_size"))
    rows = [
        ("data source", data.get("source")),
        ("data folder", data.get("data_dir")),
        ("train / val images", f"{train} / {val}"),
        ("starting weights", model.get("weights")),
        ("recipe", recipe.get("name")),
        ("epochs run", len(rec.get("epochs") or [])),
        ("peak learning rate", recipe.get("peak_lr")),
        ("augmentation", recipe.get("augment")),
    ]
    table = ["| setting | value |", "| --- | --- |"]
    table += [f"| {k} | {number(v)} |" for k, v in rows]
    return "## Training\n\n" + "\n".join(table) + "\n\nThe full settings are in train.json.\n"


def _metrics(run: Run, picture: Path | None) -> str:
    best = run.record.get("best") or {}
    out = ["## Metrics\n"]
    out.append(
        f"- validation accuracy (best epoch {number(best.get('epoch'))}): "
        f"{number(best.get('val_accuracy'))}"
    )
    per_class = run.record.get("per_class_accuracy") or {}
    if per_class:
        out += ["", "| class | validation accuracy |", "| --- | --- |"]
        out += [f"| {name} | {number(acc)} |" for name, acc in per_class.items()]
    if picture is not None:
        out += ["", f"![confusion matrix]({picture.name})"]
    else:
        out.append("- confusion matrix: not recorded by this run's training")
    return "\n".join(out) + "\n"


def _artifacts(manifest: Manifest | None, verify: dict[str, Any] | None) -> str:
    out = ["## Shipped artifacts and parity\n"]
    if manifest is None:
        return out[0] + "\nNo artifacts: the run was not exported.\n"
    if verify is not None:
        device = (verify.get("config") or {}).get("device")
        out.append(f"Parity against the eager PyTorch model, from verify.json (device {device}).\n")
    out.append(
        "| artifact | format | precision | runtime | verdict | max abs error | top-1 agreement % |"
    )
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for name, entry in manifest.artifacts.items():
        cands = [c for c in (verify or {}).get("candidates", []) if c.get("artifact") == name]
        if not cands:
            out.append(
                f"| {name} | {entry.format} | {entry.precision} | — | not verified | — | — |"
            )
        for c in cands:
            overall = c.get("overall") or {}
            out.append(
                f"| {name} | {entry.format} | {entry.precision} | {c.get('runtime')} | "
                f"{_verdict(c, entry)} | {number(overall.get('max_abs_error'))} | "
                f"{number(overall.get('top1_agreement_pct'))} |"
            )
    return "\n".join(out) + "\n"


def _verdict(candidate: dict[str, Any], entry: Any) -> str:
    if candidate.get("sha256") and candidate["sha256"] != entry.files[0].sha256:
        return "stale (file changed since verify)"
    if candidate.get("error"):
        return "error"
    return "pass" if candidate.get("passed") else "fail"


def _speed(bench: dict[str, Any] | None) -> str:
    if bench is None:
        return "## Speed\n\nNot measured (run `tlx bench`).\n"
    env = bench.get("environment") or {}
    out = ["## Speed on this machine\n"]
    out.append(
        f"Measured by tlx bench at {bench.get('created_at')} on {env.get('cpu_model')} "
        f"(instruction set: {instruction_set(env)}; {number(env.get('torch_threads'))} "
        f"threads; device {(bench.get('config') or {}).get('device')}).\n"
    )
    out.append("| artifact | runtime | device | batch | p50 latency (ms) | throughput (img/s) |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for row in bench.get("rows") or []:
        if row.get("status") != "ok":
            continue
        out.append(
            f"| {row.get('artifact')} | {row.get('runtime')} | {row.get('device')} | "
            f"{row.get('batch_size')} | {number(row.get('latency_ms_p50'))} | "
            f"{number(row.get('throughput_img_s'))} |"
        )
    for rec in bench.get("recommendations") or []:
        out.append(
            f"\nDeploy on {rec.get('device')} at batch {rec.get('batch_size')}: "
            f"{rec.get('artifact')} on {rec.get('runtime')}."
        )
    return "\n".join(out) + "\n"


def instruction_set(env: dict[str, Any]) -> str:
    """The SIMD extensions of the CPU bench ran on, when it is this machine's CPU."""
    from exporter.core.envinfo import cpu_model
    from exporter.core.machine import machine

    if env.get("cpu_isa"):
        return str(env["cpu_isa"])
    if env.get("cpu_model") != cpu_model():
        return "not recorded (measured on another machine)"
    isa = machine().isa
    found = [name for flag, name in _ISA_FLAGS if flag in isa]
    return ", ".join(found) if found else "unknown"


def _limitations(
    manifest: Manifest | None, verify: dict[str, Any] | None, bench: dict[str, Any] | None
) -> str:
    out = ["## Limitations\n"]
    checked = {c.get("artifact") for c in (verify or {}).get("candidates", [])}
    names = list(manifest.artifacts) if manifest else []
    unchecked = [n for n in names if n not in checked and manifest.artifacts[n].format != "triton"]
    if unchecked:
        out.append(f"- not verified: {', '.join(unchecked)}")
    device = ((verify or {}).get("config") or {}).get("device")
    if verify is None:
        out.append("- parity was not checked (run `tlx verify`)")
    elif device and not str(device).startswith("cuda"):
        out.append(f"- parity checked on {device} only: CUDA results were not verified")
    for s in (verify or {}).get("skipped", []):
        out.append(f"- verify skipped {s.get('runtime')}: {s.get('reason')}")
    for c in (verify or {}).get("candidates", []):
        if not c.get("task_checked", True):
            out.append(f"- {c.get('runtime')}/{c.get('artifact')}: random inputs only")
    if bench is not None:
        for s in bench.get("skipped", []):
            out.append(f"- bench skipped {s.get('runtime')}: {s.get('reason')}")
        out.append("- speed is this machine's; measure on the target hardware before sizing")
    if any(manifest.artifacts[n].format == "triton" for n in names):
        out.append("- the Triton repository is a copy of a verified artifact; run it once")
    out.append("- accuracy is the validation split's; data drift in production is not tracked")
    return "\n".join(out) + "\n"


def _provenance(run_dir: Path) -> str:
    lines = ["## Provenance and signature\n"]
    if (run_dir / PROVENANCE_NAME).is_file():
        lines.append(
            f"- {PROVENANCE_NAME}: in-toto statement (SLSA provenance v1) with every artifact's "
            "sha256, the training data fingerprint and the tool versions"
        )
    lines.append(
        f"- {SIGNATURE_NAME}: OpenSSF model signature (`tlx sign`); check it with "
        f"`tlx verify RUN --public-key PUBLIC.pem` or `model_signing verify key RUN "
        f"--signature RUN/{SIGNATURE_NAME} --public_key PUBLIC.pem`"
    )
    return "\n".join(lines) + "\n"


def _write_confusion(path: Path, matrix: list[list[int]], classes: list[str]) -> Path | None:
    """A heat map of train.json's confusion matrix (rows: true class, columns: predicted)."""
    import numpy as np

    from exporter.core.report import new_figure, save_png

    cm = np.asarray(matrix, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        return None
    size = max(4.0, 0.5 * len(classes))
    fig, axes = new_figure(size=(size, size))
    ax = axes[0][0]
    ax.imshow(cm, cmap="Blues")
    ticks = list(range(len(classes)))
    ax.set_xticks(ticks, classes, rotation=90)
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted", ylabel="true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7)
    save_png(path, fig, dpi=100)
    return path
