#!/usr/bin/env bash
# tlx predict --engine ray on a two-node Ray cluster started as the README shows, both nodes
# on this host (two raylets, two object stores, 1 CPU each: 2 actors x 1 thread must land
# on different nodes), then the rows compared byte for byte with in-process tlx predict.
#   bash benchmarks/ray_two_nodes.sh RUN IMAGES [VARIANT]
set -euo pipefail
RUN=${1:?run folder}; IMAGES=${2:?image folder}; VARIANT=${3:-pruned-int8}
BIN=${BIN:-.venv/bin}
OUT=$(mktemp -d)
PORT=${PORT:-6390}
export RAY_worker_niceness=0
export RAY_preload_python_modules=ray.data,exporter.serve.ray_predict,exporter.serve.predictor
trap '"$BIN/ray" stop --force >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT
"$BIN/ray" start --head --port="$PORT" --num-cpus=1 --include-dashboard=false \
    --disable-usage-stats >/dev/null
HEAD_IP=$("$BIN/python" -c "import ray._private.services as s; print(s.get_node_ip_address())")
# Ray's token authentication: the head wrote ~/.ray/auth_token; a node and a driver opt in.
export RAY_AUTH_MODE=token
"$BIN/ray" start --address="$HEAD_IP:$PORT" --num-cpus=1 >/dev/null
sleep 3
"$BIN/ray" status --address="$HEAD_IP:$PORT" | sed -n '/^Active:/,/^Pending:/p'
rc=0
"$BIN/tlx" predict "$RUN" "$IMAGES" --variant "$VARIANT" --engine ray \
    --ray-address "$HEAD_IP:$PORT" --output "$OUT/ray.csv" -q || rc=$?
echo "tlx predict --engine ray: exit $rc"
rc=0
"$BIN/tlx" predict "$RUN" "$IMAGES" --variant "$VARIANT" --format csv -q \
    >"$OUT/local.csv" 2>/dev/null || rc=$?
echo "tlx predict (in-process): exit $rc"
echo "rows: $(($(wc -l <"$OUT/ray.csv") - 1)) (Ray), $(($(wc -l <"$OUT/local.csv") - 1)) (in-process)"
cmp "$OUT/ray.csv" "$OUT/local.csv" && echo "identical byte for byte"
echo "failures file:"; cat "$OUT/ray.failures.csv"
