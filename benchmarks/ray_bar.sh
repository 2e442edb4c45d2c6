# Issue 25 bar: 2,000 real images (Fashion-MNIST test split, 32 px PNGs) + 1 corrupt one,
# in-process `tlx predict --format csv` vs `--engine ray`; same artifact, rows compared.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${1:?usage: benchmarks/ray_bar.sh RUN [IMAGES] [OUT]}
IMG=${2:-/tmp/tlx-ray-imgs}
OUT=${3:-/tmp/tlx-ray-out}
mkdir -p "$OUT"
if [ ! -d $IMG ]; then
  IMG=$IMG $PY - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from pathlib import Path
from PIL import Image
from transfer_data import load_fashion
x, y = load_fashion("test")
import os; out = Path(os.environ["IMG"]); out.mkdir(parents=True)
for i in range(2000):
    Image.fromarray(x[i]).save(out / f"{i:05d}.png")
(out / "corrupt.png").write_bytes(b"not a png")
PY
fi
for round in 1 2 3; do
  t0=$(date +%s.%N); $PY -m exporter predict $RUN $IMG --format csv --variant pruned-int8 -q > $OUT/ray_local.csv 2>$OUT/ray_local.err; rc1=$?; t1=$(date +%s.%N)
  rm -f $OUT/ray_out.csv $OUT/ray_out.failures.csv
  $PY -m exporter predict $RUN $IMG --variant pruned-int8 --engine ray --output $OUT/ray_out.csv --threads 1 -q 2>$OUT/ray.err; rc2=$?; t2=$(date +%s.%N)
  echo "round $round local rc=$rc1 $(echo "$t1 - $t0" | bc) s; ray rc=$rc2 $(echo "$t2 - $t1" | bc) s"
done
