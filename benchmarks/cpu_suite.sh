#!/usr/bin/env bash
# The CPU grid of tlx bench on a small shared machine (the 2-core dev box):
#   32 px at batch 1 and 32, 224 px at batch 1 — every runtime that runs on the CPU,
#   interleaved in rounds, the same seeded inputs for all.
# Writes the bench reports under $OUT (default: a temp folder) and appends a dated
# table to the "## tlx bench: CPU suite" section of benchmarks/RESULTS.md
# (RESULTS= disables that).
#
# Usage:  benchmarks/cpu_suite.sh            (from the repository root or anywhere)
# Knobs:  PYTHON=... ITERS=20 WARMUP=3 THREADS=$(nproc) OUT=dir RESULTS=path
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-3}
THREADS=${THREADS:-$(nproc)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tlx-cpu-suite.XXXXXX")
# Each run folder holds ~2 GB of weights and artifacts: delete the model files on exit (the
# reports stay), so repeated suites do not fill the disk.
trap 'find "$WORK" -type f \( -name "*.onnx" -o -name "*.ts" -o -name "*.pt2" -o -name "*.safetensors" -o -name "*.pt" -o -name "*.data" \) -delete 2>/dev/null' EXIT
OUT=${OUT:-$WORK/out}
RESULTS=${RESULTS-benchmarks/RESULTS.md}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::FutureWarning}  # torch.jit.load deprecation, once per load
mkdir -p "$OUT"
log() { printf '[cpu_suite %4ss] %s\n' "$SECONDS" "$*" >&2; }

# A run folder the product's way (train on the built-in synthetic data, random init, one
# epoch on a handful of images: the weights do not change the timings), then every format.
make_run() {
  local size=$1 dir=$2
  log "train ${size}px -> $dir"
  "$PY" - "$size" "$dir" <<'PYEOF'
import sys
from exporter.core.config import DataConfig, TrainConfig
from exporter.train import fit
size, out = int(sys.argv[1]), sys.argv[2]
fit(TrainConfig(data=DataConfig(source="synthetic", train_size=16, val_size=16,
                                image_size=size, augment=False),
                weights="none", epochs=1, batch_size=16, device="cpu", out=out, quiet=True))
PYEOF
  log "export ${size}px (onnx, torchscript, pt2)"
  "$PY" -m exporter export "$dir" -q
}

make_run 32 "$WORK/run32"
make_run 224 "$WORK/run224"

COMMON=(--runtimes all --device cpu --threads "$THREADS" --iters "$ITERS" --warmup "$WARMUP" -q)
log "bench 32px b1,b32"
"$PY" -m exporter bench "$WORK/run32" --batch-sizes 1,32 --out "$OUT/cpu-32px" "${COMMON[@]}"
log "bench 224px b1"
"$PY" -m exporter bench "$WORK/run224" --batch-sizes 1 --out "$OUT/cpu-224px" "${COMMON[@]}"

CMD="benchmarks/cpu_suite.sh  (ITERS=$ITERS WARMUP=$WARMUP THREADS=$THREADS)"
"$PY" - "$OUT" "$CMD" "$RESULTS" <<'PYEOF'
import sys
from pathlib import Path
from benchmarks.suite import append_to_section, suite_markdown
from exporter.core.fsio import write_text
out, cmd, results = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
block = suite_markdown([out / "cpu-32px" / "bench.json", out / "cpu-224px" / "bench.json"],
                       title="CPU suite", command=cmd)
write_text(out / "summary.md", block)
if results:
    append_to_section(results, "## tlx bench: CPU suite (benchmarks/cpu_suite.sh)", block)
print(block)
PYEOF
log "done: reports in $OUT${RESULTS:+, table appended to $RESULTS}"
