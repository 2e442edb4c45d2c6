#!/usr/bin/env bash
# The GPU grid of tlx bench for one H200 (or any CUDA GPU), in one command, < 8 minutes:
#   32 px and 224 px; batch 1/8/64/256;
#   fp32: eager, TorchScript, .pt2, torch.compile, and ORT-CUDA / ORT-TensorRT when the
#         installed onnxruntime has those providers (skipped with the reason otherwise);
#   bf16 and fp16: eager (autocast) — and torch.compile when COMPILE_HALF=1. TorchScript and
#         .pt2 artifacts are fp32 files and their runtimes do not autocast, so they are timed
#         in fp32 only (labelling them bf16 would be a lie);
#   ORT-CPU vs eager on the host CPU at batch 1 and 8 (32 px) and 1 (224 px).
# Steps run in priority order; a step that would start after BUDGET_S seconds is skipped
# and listed, and every step has its own timeout, so the whole run stays under 8 minutes.
# Without CUDA it says so and runs the CPU subset only (32 px), quickly.
#
# Needs only this repository and a Python with torch, torchvision, onnx, onnxscript,
# onnxruntime, typer, rich, safetensors, matplotlib (no install: PYTHONPATH=repo).
# Usage:  OUT=/some/dir benchmarks/gpu_suite.sh     (full results in $OUT/gpu_suite/)
# Knobs:  PYTHON=python3 ITERS=20 WARMUP=5 BUDGET_S=420 STEP_TIMEOUT_S=200 COMPILE_HALF=0
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-5}
BUDGET_S=${BUDGET_S:-420}
STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-200}
COMPILE_HALF=${COMPILE_HALF:-0}
BASE=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tlx-gpu-suite.XXXXXX")}
RES="$BASE/gpu_suite"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tlx-gpu-runs.XXXXXX")
# Each run folder holds ~2 GB of weights and artifacts: delete the model files on exit (the
# reports stay), so repeated suites do not fill the disk.
trap 'find "$WORK" -type f \( -name "*.onnx" -o -name "*.ts" -o -name "*.pt2" -o -name "*.safetensors" -o -name "*.pt" -o -name "*.data" \) -delete 2>/dev/null' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::FutureWarning}  # torch.jit.load deprecation, once per load
mkdir -p "$RES"
STEPLOG="$RES/steps.tsv"
printf 'step\tstatus\tseconds\n' > "$STEPLOG"
log() { printf '[gpu_suite %4ss] %s\n' "$SECONDS" "$*" >&2; }

# step NAME CMD...: run under the step timeout unless the time budget is spent.
step() {
  local name=$1; shift
  if (( SECONDS > BUDGET_S )); then
    log "SKIP $name (time budget of ${BUDGET_S}s spent)"
    printf '%s\tskipped: time budget\t0\n' "$name" >> "$STEPLOG"
    return 0
  fi
  log "$name"
  local t0=$SECONDS rc=0
  timeout "$STEP_TIMEOUT_S" "$@" >> "$RES/steps.log" 2>&1 || rc=$?
  local status=ok
  if (( rc == 124 )); then status="timeout after ${STEP_TIMEOUT_S}s"
  elif (( rc != 0 )); then status="exit $rc (see steps.log)"; fi
  (( rc != 0 )) && log "  -> $status"
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$STEPLOG"
}

if ! "$PY" -c 'import torch, onnx, typer, rich' 2>/dev/null; then
  echo "gpu_suite: $PY cannot import torch/onnx/typer/rich; set PYTHON=/path/to/python" >&2
  exit 3
fi
HAS_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
PROVIDERS=$("$PY" -c 'import onnxruntime as o; print(" ".join(o.get_available_providers()))' \
  2>/dev/null || echo none)
log "python: $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)')"
log "onnxruntime providers: $PROVIDERS"

if [ "$HAS_CUDA" = 1 ]; then
  SIZES="32 224"
  log "CUDA: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
else
  SIZES="32"
  ITERS=${ITERS_CPU:-5}
  WARMUP=1
  log "NO CUDA on this machine: running the CPU subset only (32 px; eager and ORT-CPU at"
  log "batch 1 and 8, ${ITERS} iterations). No GPU numbers are produced."
fi

make_run() {  # train (synthetic, random init, 1 tiny epoch: weights do not change timings), export
  local size=$1 dir=$2
  "$PY" - "$size" "$dir" <<'PYEOF' || return $?
import sys
from exporter.core.config import DataConfig, TrainConfig
from exporter.train import fit
size, out = int(sys.argv[1]), sys.argv[2]
fit(TrainConfig(data=DataConfig(source="synthetic", train_size=16, val_size=16,
                                image_size=size, augment=False),
                weights="none", epochs=1, batch_size=16, device="auto", out=out, quiet=True))
PYEOF
  "$PY" -m exporter export "$dir" -q
}
export -f make_run
export PY

for S in $SIZES; do step "run+export ${S}px" bash -c "make_run $S $WORK/run$S"; done

bench() {  # bench LABEL RUN ARGS...
  local label=$1 run=$2; shift 2
  step "bench $label" "$PY" -m exporter bench "$run" --out "$RES/$label" \
    --iters "$ITERS" --warmup "$WARMUP" -q "$@"
}

if [ "$HAS_CUDA" = 1 ]; then
  FP32_RT="eager,torchscript,pt2"
  [[ " $PROVIDERS " == *" CUDAExecutionProvider "* ]] && FP32_RT="$FP32_RT,ort-cuda"
  [[ " $PROVIDERS " == *" TensorrtExecutionProvider "* ]] && FP32_RT="$FP32_RT,ort-trt"
  GPU=(--device cuda --batch-sizes 1,8,64,256)
  for S in $SIZES; do bench "cuda-${S}px-fp32" "$WORK/run$S" "${GPU[@]}" --runtimes "$FP32_RT"; done
  for P in bf16 fp16; do
    for S in $SIZES; do
      bench "cuda-${S}px-$P" "$WORK/run$S" "${GPU[@]}" --runtimes eager --precision "$P"
    done
  done
  bench "cpu-32px-fp32" "$WORK/run32" --device cpu --runtimes eager,ort-cpu --batch-sizes 1,8
  bench "cpu-224px-fp32" "$WORK/run224" --device cpu --runtimes eager,ort-cpu --batch-sizes 1
  for S in $SIZES; do
    bench "cuda-${S}px-fp32-compile" "$WORK/run$S" "${GPU[@]}" --runtimes eager,compile
  done
  if [ "$COMPILE_HALF" = 1 ]; then
    for P in bf16 fp16; do
      for S in $SIZES; do
        bench "cuda-${S}px-$P-compile" "$WORK/run$S" "${GPU[@]}" --runtimes eager,compile \
          --precision "$P"
      done
    done
  fi
else
  bench "cpu-32px-fp32" "$WORK/run32" --device cpu --runtimes eager,ort-cpu --batch-sizes 1,8
fi

# Multi-GPU training (tlx train --nproc, DDP over NCCL): 1 vs all GPUs, same global batch.
# Only on a machine with at least 2 GPUs; results in $RES/ddp_bench.json.
NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [ "${NGPU:-0}" -ge 2 ]; then
  step "train ddp 1 vs ${NGPU} GPUs" "$PY" benchmarks/ddp_bench.py --device cuda \
    --nproc-list "1,$NGPU" --image-size 224 --train-size $((512 * NGPU)) --val-size 256 \
    --epochs 2 --rounds 1 --batch-size $((32 * NGPU)) --out "$RES/ddp_bench.json"
else
  log "SKIP train ddp: ${NGPU} GPU(s) here; the multi-GPU line needs at least 2"
fi

# Full table to $RES/summary.md and summary.csv; a short pivot (p50 ms per batch) last.
"$PY" - "$RES" "$HAS_CUDA" <<'PYEOF'
import csv, sys
from pathlib import Path
from exporter.bench.bench import suite_markdown, suite_rows
from exporter.core.fsio import write_text
from exporter.core.report import rows_to_csv
res, has_cuda = Path(sys.argv[1]), sys.argv[2] == "1"
reports = sorted(res.glob("*/bench.json"))
steps = list(csv.DictReader((res / "steps.tsv").open(), delimiter="\t"))
lines = ["", "tlx gpu_suite: " + ("CUDA" if has_cuda else "NO CUDA - CPU subset only")]
if reports:
    md = suite_markdown(reports, title="GPU suite" if has_cuda else "GPU suite, CPU subset",
                        command="benchmarks/gpu_suite.sh")
    write_text(res / "summary.md", md)
    rows = [r for r in suite_rows(reports) if r.get("latency_ms_p50") is not None]
    write_text(res / "summary.csv", rows_to_csv(rows))
    batches = sorted({r["batch_size"] for r in rows})
    keys = sorted({(r["device"], r["image_size"], r["precision"], r["runtime"]) for r in rows},
                  key=str)
    head = f"{'device':6} {'px':>4} {'prec':5} {'runtime':12}" + "".join(
        f" {'b' + str(b) + ' ms':>10}" for b in batches) + f" {'x eager@max':>11}"
    lines += ["p50 latency (ms) by batch; x eager = eager p50 / runtime p50 at the largest batch",
              head]
    for key in keys:
        mine = {r["batch_size"]: r for r in rows
                if (r["device"], r["image_size"], r["precision"], r["runtime"]) == key}
        cells = "".join(f" {mine[b]['latency_ms_p50']:>10.3f}" if b in mine else f" {'-':>10}"
                        for b in batches)
        top = mine[max(mine)].get("speedup")
        lines.append(f"{key[0]:6} {key[1]!s:>4} {key[2]!s:5} {key[3]:12}{cells}"
                     f" {'' if top is None else f'{top:.2f}x':>11}")
else:
    lines.append("no bench report was produced; see steps.log")
bad = [s for s in steps if s["status"] != "ok"]
lines += [f"step {s['step']}: {s['status']}" for s in bad]
lines.append(f"full results: {res}/summary.md (+ one folder per step with bench.json/.md/.csv/.png)")
print("\n".join(lines))
PYEOF
log "done in ${SECONDS}s"
