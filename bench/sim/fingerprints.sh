#!/usr/bin/env bash
# Schedule fingerprints of every trace x policy of bench/sim/run.sh: a
# change to the core that must not change any decision keeps every line of
# this output identical (docs/benchmarks.md lists the values).
#
#   bash bench/sim/fingerprints.sh
#   SIM_BENCH=target/release/examples/sim_bench bash bench/sim/fingerprints.sh
#
# The fingerprint is the `sim_bench` example's FNV-1a hash of every job's
# (SWF id, first start, end), in job order; mean wait and bounded slowdown
# are printed too so that a difference is easy to read.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared}
TRACES=$SHARED/traces
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

if [ -z "${SIM_BENCH:-}" ]; then
  cargo build --release -q -p vgrid-sim --example sim_bench
  SIM_BENCH=$CARGO_TARGET_DIR/release/examples/sim_bench
fi

echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| run | policy | jobs | mean wait s | mean bsld | fingerprint |"
echo "|---|---|---|---|---|---|"

row() {
  local name=$1 policy=$2
  shift 2
  local out
  out=$("$SIM_BENCH" "$@" "$policy")
  # jobs=N policy=P mean_wait_s=W mean_bsld=B read_s=... schedule=H
  awk -v n="$name" -v p="$policy" '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "| %s | %s | %s | %s | %s | `%s` |\n", n, p, v["jobs"], v["mean_wait_s"], v["mean_bsld"], v["schedule"]
  }' <<<"$out"
}

for policy in fcfs easy; do
  row "CTC-SP2, 512 procs" "$policy" "$TRACES/CTC-SP2-1996-3.1-cln.swf.gz" --procs 512
  row "CTC-SP2, 338 procs" "$policy" "$TRACES/CTC-SP2-1996-3.1-cln.swf.gz" --procs 338
  row "HPC2N, 240 procs" "$policy" "$TRACES/HPC2N-2002-2.2-cln.swf.gz" --procs 240
  row "synthetic 1M jobs, 10,000 procs" "$policy" --synthetic 1000000 10000
  row "synthetic wide 300k jobs, 90,000 procs" "$policy" --synthetic 300000 90000 --shape wide
done
