# Issue 25 bar: 2,000 real images (Fashion-MNIST test split, 28 px PNGs) + 1 corrupt one,
# in-process `tlx predict` vs `--engine ray` on one local 2-CPU Ray, 3 interleaved rounds;
# same artifact, rows compared, medians and the ratio printed. See benchmarks/ray_bar.py.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${1:?usage: benchmarks/ray_bar.sh RUN [IMAGES] [OUT]}
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" $PY benchmarks/ray_bar.py "$RUN" \
  --images "${2:-/tmp/tlx-ray-imgs}" --out "${3:-/tmp/tlx-ray-out}" --rounds 3
