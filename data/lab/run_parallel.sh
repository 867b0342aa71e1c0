#!/usr/bin/env bash
# The full lab pipeline with one process per base, side by side, then the curves gathered.
# The models are tiny: on a GPU one process uses a sliver of it, so six share one card; on CPU,
# give each process a thread (THREADS) and run as many as you have cores.
#
#   data/lab/run_parallel.sh                         # DEVICE=auto: cuda when present, else cpu
#   DEVICE=cpu THREADS=1 data/lab/run_parallel.sh
#   MERGELAW="python -m mergelaw" data/lab/run_parallel.sh   # without the installed entry point
#
# Resumable like `mergelaw lab run`: run it again after an interruption. Logs: build/lab/logs/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pipeline=${PIPELINE:-$here/pipeline.toml}
read -r -a mergelaw <<<"${MERGELAW:-mergelaw}"
logs=${LOGS:-$here/../../build/lab/logs}
mkdir -p "$logs"
mapfile -t bases < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$pipeline")
pids=()
for base in "${bases[@]}"; do
  "${mergelaw[@]}" lab run "$pipeline" --until sweeps --only "$base" --device "${DEVICE:-auto}" \
    --threads "${THREADS:-2}" --no-progress >"$logs/$base.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "base ${bases[$i]} failed: see $logs/${bases[$i]}.log" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
"${mergelaw[@]}" lab run "$pipeline" --until curves --no-progress
