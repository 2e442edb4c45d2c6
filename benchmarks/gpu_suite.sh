#!/usr/bin/env bash
# The GPU check and benchmark grid of tlx for one CUDA GPU (sized for an H200), in ONE
# time-boxed command: a hard deadline (TOTAL_S, default 510 s) covers everything, and the
# output is one archive plus three summary files, flat in $OUT:
#   $OUT/gpu_suite.tar.gz   every step's reports (bench.json/.md/.csv/.png, verify.json/.md,
#                           the gpu tests' log, steps.log)
#   $OUT/summary.md         the combined bench table
#   $OUT/summary.csv        the same rows
#   $OUT/steps.tsv          each step: status (ok / exit N / timeout / skipped: why), seconds
# and a short table printed on stdout last.
#
# Steps, in priority order (on CUDA):
#   run+export 32px; verify --device cuda 32px (TF32 off: fp32 candidates must pass);
#   pytest -m gpu (the CUDA tests: training with the trunk partly unfrozen and uncached,
#   deterministic + bf16/fp16 AMP, resume across devices, TF32 flags); run+export 224px;
#   bench fp32 (eager, TorchScript, .pt2, + ORT-CUDA / TensorRT when the installed
#   onnxruntime has them) at 32 and 224 px, batch 1/8/64/256; verify --device cuda 224px;
#   bf16 and fp16 eager (autocast); ORT-CPU vs eager on the host CPU; torch.compile.
# Without CUDA the GPU steps are listed as "skipped: no CUDA" and the CPU subset runs (32 px,
# eager and ORT-CPU at batch 1 and 8), well inside the deadline.
#
# Every step's timeout is STEP_TIMEOUT_S cut to what the deadline leaves after RESERVE_S
# (kept for the summary and the archive); `python benchmarks/suite.py` does the
# arithmetic. A step that would get under MIN_STEP_S is skipped and listed.
#
# Needs only this repository and a Python with torch, torchvision, onnx, onnxscript,
# onnxruntime, typer, rich, safetensors, matplotlib (no install: PYTHONPATH=repo); the gpu
# tests also need pytest and hypothesis.
# Usage:  OUT=/some/dir benchmarks/gpu_suite.sh
# Knobs:  PYTHON=python3 ITERS=20 WARMUP=5 TOTAL_S=510 RESERVE_S=30 STEP_TIMEOUT_S=200
#         MIN_STEP_S=20 COMPILE_HALF=0 ITERS_CPU=5
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-5}
TOTAL_S=${TOTAL_S:-510}
RESERVE_S=${RESERVE_S:-30}
STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-200}
MIN_STEP_S=${MIN_STEP_S:-20}
COMPILE_HALF=${COMPILE_HALF:-0}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tlx-gpu-suite.XXXXXX")}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tlx-gpu-runs.XXXXXX")
RES="$WORK/gpu_suite"
# Run folders hold ~2 GB of weights and artifacts: the whole work folder goes on exit (the
# reports are in the archive by then).
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::FutureWarning}  # torch.jit.load deprecation
export PYTHONUNBUFFERED=1
mkdir -p "$RES" "$OUT"
STEPLOG="$RES/steps.tsv"
printf 'step\tstatus\tseconds\n' > "$STEPLOG"
log() { printf '[gpu_suite %4ss] %s\n' "$SECONDS" "$*" >&2; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$STEPLOG"; }
skip() { log "SKIP $1 ($2)"; record "$1" "skipped: $2" 0; }

# step NAME CMD...: run under its own timeout, cut to what the hard deadline leaves.
step() {
  local name=$1; shift
  local limit
  limit=$("$PY" benchmarks/suite.py --elapsed "$SECONDS" --total "$TOTAL_S" \
    --step "$STEP_TIMEOUT_S" --reserve "$RESERVE_S" --min "$MIN_STEP_S") || limit=0
  if (( limit == 0 )); then skip "$name" "deadline of ${TOTAL_S}s too close"; return 0; fi
  log "$name (timeout ${limit}s)"
  local t0=$SECONDS rc=0
  printf '\n===== %s =====\n' "$name" >> "$RES/steps.log"
  timeout -k 5 "$limit" "$@" >> "$RES/steps.log" 2>&1 || rc=$?
  local status=ok
  if (( rc == 124 || rc == 137 )); then status="timeout after ${limit}s"
  elif (( rc != 0 )); then status="exit $rc (see steps.log)"; fi
  (( rc != 0 )) && log "  -> $status"
  record "$name" "$status" "$((SECONDS - t0))"
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
  log "CUDA: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
else
  ITERS=${ITERS_CPU:-5}
  WARMUP=1
  log "NO CUDA on this machine: GPU steps are skipped; running the CPU subset (32 px; eager"
  log "and ORT-CPU at batch 1 and 8, ${ITERS} iterations). No GPU numbers are produced."
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

bench() {  # bench LABEL RUN ARGS...
  local label=$1 run=$2; shift 2
  if [ ! -f "$run/manifest.json" ]; then skip "bench $label" "no run folder (its step failed)"; return 0; fi
  step "bench $label" "$PY" -m exporter bench "$run" --out "$RES/$label" \
    --iters "$ITERS" --warmup "$WARMUP" -q "$@"
}

verify_cuda() {  # verify_cuda LABEL RUN RUNTIMES: fp32 candidates on CUDA, TF32 off
  local label=$1 run=$2 runtimes=$3
  if [ ! -f "$run/manifest.json" ]; then skip "verify $label" "no run folder (its step failed)"; return 0; fi
  step "verify $label" bash -c "'$PY' -m exporter verify '$run' --device cuda --runtimes \
    '$runtimes' --samples 16 --localize -q; rc=\$?; mkdir -p '$RES/verify-$label'; \
    cp '$run'/verify.json '$run'/verify.md '$RES/verify-$label/' 2>/dev/null; exit \$rc"
}

step "run+export 32px" bash -c "make_run 32 $WORK/run32"
if [ "$HAS_CUDA" = 1 ]; then
  FP32_RT="eager,torchscript,pt2"
  [[ " $PROVIDERS " == *" CUDAExecutionProvider "* ]] && FP32_RT="$FP32_RT,ort-cuda"
  [[ " $PROVIDERS " == *" TensorrtExecutionProvider "* ]] && FP32_RT="$FP32_RT,ort-trt"
  GPU=(--device cuda --batch-sizes 1,8,64,256)
  verify_cuda cuda-32px "$WORK/run32" "$FP32_RT"
  step "pytest -m gpu" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
  step "run+export 224px" bash -c "make_run 224 $WORK/run224"
  for S in 32 224; do bench "cuda-${S}px-fp32" "$WORK/run$S" "${GPU[@]}" --runtimes "$FP32_RT"; done
  verify_cuda cuda-224px "$WORK/run224" "$FP32_RT"
  for P in bf16 fp16; do
    for S in 32 224; do
      bench "cuda-${S}px-$P" "$WORK/run$S" "${GPU[@]}" --runtimes eager --precision "$P"
    done
  done
  bench "cpu-32px-fp32" "$WORK/run32" --device cpu --runtimes eager,ort-cpu --batch-sizes 1,8
  bench "cpu-224px-fp32" "$WORK/run224" --device cpu --runtimes eager,ort-cpu --batch-sizes 1
  for S in 32 224; do
    bench "cuda-${S}px-fp32-compile" "$WORK/run$S" "${GPU[@]}" --runtimes eager,compile
  done
  if [ "$COMPILE_HALF" = 1 ]; then
    for P in bf16 fp16; do
      for S in 32 224; do
        bench "cuda-${S}px-$P-compile" "$WORK/run$S" "${GPU[@]}" --runtimes eager,compile \
          --precision "$P"
      done
    done
  fi
else
  for name in "verify cuda-32px" "pytest -m gpu" "run+export 224px" "bench cuda-*"; do
    skip "$name" "no CUDA"
  done
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
  skip "train ddp" "${NGPU} GPU(s) here; the multi-GPU line needs at least 2"
fi

# Summary (inside the reserve): summary.md/.csv and a short pivot on stdout, then the archive.
timeout -k 5 "$((RESERVE_S * 2 / 3))" "$PY" - "$RES" "$OUT" "$HAS_CUDA" <<'PYEOF'
import csv, json, sys
from pathlib import Path
from benchmarks.suite import suite_markdown, suite_rows
from exporter.core.fsio import write_text
from exporter.core.report import rows_to_csv
res, out, has_cuda = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
reports = sorted(res.glob("*/bench.json"))
steps = list(csv.DictReader((res / "steps.tsv").open(), delimiter="\t"))
lines = ["", "tlx gpu_suite: " + ("CUDA" if has_cuda else "NO CUDA - CPU subset only")]
if reports:
    md = suite_markdown(reports, title="GPU suite" if has_cuda else "GPU suite, CPU subset",
                        command="benchmarks/gpu_suite.sh")
    write_text(out / "summary.md", md)
    rows = [r for r in suite_rows(reports) if r.get("latency_ms_p50") is not None]
    write_text(out / "summary.csv", rows_to_csv(rows))
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
    lines.append("no bench report was produced; see steps.log in the archive")
for path in sorted(res.glob("verify-*/verify.json")):
    v = json.loads(path.read_text())
    bad = [f"{c['runtime']}/{c['artifact']}" for c in v["candidates"] if not c["passed"]]
    lines.append(f"{path.parent.name}: {v['verdict']} ({v['passed_n']} passed, "
                 f"{v['failed_n']} failed{': ' + ', '.join(bad) if bad else ''}; "
                 f"tf32 {v.get('math', {}).get('tf32')})")
lines += [f"step {s['step']}: {s['status']}" for s in steps if s["status"] != "ok"]
print("\n".join(lines))
PYEOF
cp "$STEPLOG" "$OUT/steps.tsv"
tar -czf "$OUT/gpu_suite.tar.gz" -C "$WORK" gpu_suite
log "done in ${SECONDS}s (deadline ${TOTAL_S}s)"
echo "full results: $OUT/gpu_suite.tar.gz (summary.md, summary.csv, steps.tsv beside it)"
