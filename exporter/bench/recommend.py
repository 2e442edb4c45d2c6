""" "Deploy this": per device and batch size, the fastest artifact × runtime that passed verify.

Only pairs that ``tlx verify`` passed on the same device are eligible, and only while the
file is the one verify checked: each verify candidate records the sha256 of its artifact, and
it must equal the manifest's hash now (bench has just matched every file it timed against the
manifest). A run without ``verify.json``, or verified before a re-export, gets no
recommendation and a note that says what to run.

Each recommendation (``bench.json["recommendations"]``; ``exporter.serve`` reads it)::

    {"device": "cpu", "batch_size": 1, "artifact": "model.fold.int8.onnx",
     "file": "model.fold.int8.onnx", "runtime": "ort-cpu", "median_ms": 1.23,
     "speedup_vs_eager": 12.3, "verified": true, "sha256": "...", "precision": "int8",
     "bytes": 33856575, "top1_agreement_pct": 100.0 (held-out images where verify had them),
     "runner_up": {"runtime": "openvino", "artifact": ..., "median_ms": ..., "slower_x": 1.2}}

``runner_up`` is the fastest eligible pair on a *different* runtime, so the report can say
when one runtime (OpenVINO, say) beats the others on the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.bench.result import OK, BenchReport
from exporter.core.runfolder import VERIFY_JSON
from exporter.core.runreports import (
    ReportUnreadable,
    VerifiedCandidate,
    read_verify,
    same_device,
)

EAGER = "eager"


def recommend(report: BenchReport) -> tuple[list[dict[str, Any]], list[str]]:
    """The recommendations of a bench report and notes on what was left out and why.

    Never raises on a missing or unreadable ``verify.json``: that is a note, not an error
    (bench's own results stand without it).
    """
    device = report.config.device
    verified, notes = verified_pairs(report.run_dir, device)
    if not verified:
        return [], notes
    hashes = _manifest_hashes(report.run_dir)
    rows = [r for r in report.rows() if r["status"] == OK and r.get("latency_ms_p50")]
    eager_p50 = {r["batch_size"]: r["latency_ms_p50"] for r in rows if r["runtime"] == EAGER}
    stale: set[str] = set()
    eligible: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        cand = verified.get((row["runtime"], row["artifact"]))
        if cand is None:
            continue
        sha, size, file = hashes.get(row["artifact"], (None, None, None))
        if sha is None or cand.sha256 != sha:
            stale.add(row["artifact"])
            continue
        eligible.setdefault(row["batch_size"], []).append(
            {"row": row, "cand": cand, "sha256": sha, "bytes": size, "file": file}
        )
    if stale:
        notes.append(
            f"not recommended, changed since `tlx verify` or verified by an older tlx: "
            f"{', '.join(sorted(stale))} (rerun `tlx verify {report.run_dir}`)"
        )
    recs = [
        _entry(device, batch, options, eager_p50.get(batch))
        for batch, options in sorted(eligible.items())
    ]
    fastest = report.fastest()
    for rec in recs:
        best = fastest.get(rec["batch_size"])
        if best and (best["runtime"], best["artifact"]) != (rec["runtime"], rec["artifact"]):
            notes.append(
                f"b{rec['batch_size']}: the fastest measured, {best['runtime']} on "
                f"{best['artifact']} ({best['latency_ms_p50']:.3f} ms), is not recommended: "
                "it has not passed `tlx verify` on this device"
            )
    return recs, notes


def _entry(
    device: str, batch: int, options: list[dict[str, Any]], eager_ms: float | None
) -> dict[str, Any]:
    options = sorted(options, key=lambda o: o["row"]["latency_ms_p50"])
    best = options[0]
    row, cand = best["row"], best["cand"]
    median = float(row["latency_ms_p50"])
    other = next((o for o in options if o["row"]["runtime"] != row["runtime"]), None)
    runner_up = None
    if other is not None:
        other_ms = float(other["row"]["latency_ms_p50"])
        runner_up = {
            "runtime": other["row"]["runtime"],
            "artifact": other["row"]["artifact"],
            "median_ms": other_ms,
            "slower_x": other_ms / median,
        }
    return {
        "device": device,
        "batch_size": batch,
        "artifact": row["artifact"],
        "file": best["file"],
        "runtime": row["runtime"],
        "median_ms": median,
        "speedup_vs_eager": eager_ms / median if eager_ms else None,
        "verified": True,
        "sha256": best["sha256"],
        "precision": row.get("precision"),
        "bytes": best["bytes"],
        "top1_agreement_pct": cand.top1_agreement_pct,
        "runner_up": runner_up,
    }


def verified_pairs(
    run_dir: Path, device: str
) -> tuple[dict[tuple[str, str], VerifiedCandidate], list[str]]:
    """``(runtime, artifact) -> verify candidate`` for every pair that passed on ``device``
    (the device rule of :func:`exporter.core.runreports.same_device`)."""
    try:
        record = read_verify(run_dir)
    except ReportUnreadable as exc:
        return {}, [f"{exc}; rerun `tlx verify`"]
    if record is None:
        return {}, [f"no {VERIFY_JSON}: run `tlx verify {run_dir}` to get a recommendation"]
    if not same_device(record.device, device):
        return {}, [
            f"{VERIFY_JSON} verified on {record.device}, bench ran on {device}: run "
            f"`tlx verify {run_dir} --device {device}` to get a recommendation for it"
        ]
    passed = {(c.runtime, c.artifact): c for c in record.passed_on(device)}
    if not passed:
        return {}, [f"nothing passed `tlx verify` in {VERIFY_JSON}: no recommendation"]
    return passed, []


def _manifest_hashes(run_dir: Path) -> dict[str, tuple[str, int, str]]:
    """Artifact name -> (sha256, bytes of all its files, main file); the weights too."""
    from exporter.core.manifest import load_manifest, manifest_path

    if not manifest_path(run_dir).is_file():
        return {}
    manifest = load_manifest(run_dir)
    out = {
        name: (entry.files[0].sha256, sum(f.bytes for f in entry.files), entry.path)
        for name, entry in manifest.artifacts.items()
    }
    src = manifest.source
    out[Path(src.path).name] = (src.sha256, src.bytes, src.path)
    return out


def _figures(rec: dict[str, Any]) -> str:
    """A recommendation's numbers, as bench.md and the terminal both say them."""
    speed, agree = rec["speedup_vs_eager"], rec["top1_agreement_pct"]
    return (
        f"{rec['median_ms']:.3f} ms p50"
        + ("" if speed is None else f", {speed:.2f}x eager")
        + f", {rec['precision']}, {rec['bytes'] / 1e6:.1f} MB"
        + ("" if agree is None else f", top-1 agreement {agree:.1f}%")
    )


def recommendation_lines(recs: list[dict[str, Any]], notes: list[str]) -> list[str]:
    """bench.md's "Deploy this" section."""
    lines = ["## Deploy this", ""]
    if not recs:
        lines.append("No recommendation: nothing timed here has passed `tlx verify`.")
    for rec in recs:
        lines.append(
            f"- **{rec['device']} b{rec['batch_size']}: {rec['artifact']} on {rec['runtime']}** "
            f"— {_figures(rec)}, passed verify"
        )
        other = rec["runner_up"]
        if other:
            lines.append(
                f"  - {rec['runtime']} wins: {other['slower_x']:.2f}x faster than the best "
                f"{other['runtime']} run ({other['artifact']}, {other['median_ms']:.3f} ms)"
            )
    lines += ["", *[f"- {n}" for n in notes], ""] if notes else [""]
    return lines


def deploy_lines(report: BenchReport) -> list[str]:
    """The "deploy this" lines for a terminal (``tlx bench`` and ``tlx demo``): one per
    recommendation, else why there is none and the fastest runtime per batch size."""
    out = []
    for rec in report.recommendations:
        other = rec["runner_up"]
        out.append(
            f"deploy this ({rec['device']}, batch {rec['batch_size']}): {rec['artifact']} on "
            f"{rec['runtime']}, {_figures(rec)}"
            + (
                f"; {other['slower_x']:.2f}x faster than the best {other['runtime']} run"
                if other
                else ""
            )
        )
    if not report.recommendations:
        out += [f"no recommendation: {note}" for note in report.recommendation_notes]
        out += [
            f"fastest at batch {b} (not verified): {row['runtime']} on {row['artifact']}, "
            f"{row['latency_ms_p50']:.2f} ms"
            for b, row in report.fastest().items()
        ]
    return out
