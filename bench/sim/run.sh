#!/usr/bin/env bash
# Simulator benchmarks (issue 2, "Performance"): prints a markdown table.
#
#   bash bench/sim/run.sh            # everything, AccaSim included (minutes)
#   ACCASIM=0 bash bench/sim/run.sh  # without the AccaSim comparison
#   VGRID=target/release/vgrid ...    # an existing binary, no build
#
# Each trace run is the whole `vgrid sim` command, reading the gzipped file
# included, timed from outside (best of REPEAT runs, and the median).
# Peak memory of the synthetic run comes from /usr/bin/time -v.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared}
TRACES=$SHARED/traces
REPEAT=${REPEAT:-5}
ACCASIM=${ACCASIM:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# VGRID=path/to/vgrid uses an existing release binary instead of building.
if [ -z "${VGRID:-}" ]; then
  cargo build --release -q -p vgrid
  VGRID=$CARGO_TARGET_DIR/release/vgrid
fi
TMP=$(mktemp -d -t vgrid-bench-XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# Runs a command REPEAT times; prints "best_wall median_wall median_cpu"
# (seconds; cpu = user + system time of the process, which a loaded machine
# inflates much less than wall time).
stats() {
  python3 - "$REPEAT" "$@" <<'PY'
import resource, subprocess, sys, time
n, cmd = int(sys.argv[1]), sys.argv[2:]
walls, cpus = [], []
for _ in range(n):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    walls.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpus.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
walls.sort(); cpus.sort()
print("%.3f %.3f %.3f" % (walls[0], walls[len(walls) // 2], cpus[len(cpus) // 2]))
PY
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| run | jobs | target | best wall s | median wall s | median CPU s | peak RSS | result |"
echo "|---|---|---|---|---|---|---|---|"

trace_row() {
  local name=$1 file=$2 target=$3
  shift 3
  local jobs best med cpu verdict
  jobs=$("$VGRID" sim --trace "$file" --policy easy --json "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"])')
  read -r best med cpu < <(stats "$VGRID" sim --trace "$file" --policy easy --json "$@")
  verdict=$(awk -v m="$best" -v t="$target" 'BEGIN {print (m <= t) ? "met" : "MISSED"}')
  echo "| $name EASY, gzipped trace read included | $jobs | <= $target s | $best | $med | $cpu | | $verdict (best wall) |"
}

trace_row "CTC-SP2" "$TRACES/CTC-SP2-1996-3.1-cln.swf.gz" 0.05
trace_row "HPC2N" "$TRACES/HPC2N-2002-2.2-cln.swf.gz" 0.2

# Synthetic: 1,000,000 jobs on 10,000 nodes, EASY.
/usr/bin/time -v "$VGRID" sim --synthetic 1000000 --procs 10000 --seed 1 --policy easy --json \
  >"$TMP/synth.json" 2>"$TMP/synth.time"
synth_wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; printf "%.2f", s}' "$TMP/synth.time")
synth_rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$TMP/synth.time")
synth_jobs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"])' "$TMP/synth.json")
v1=$(awk -v m="$synth_wall" 'BEGIN {print (m <= 10) ? "met" : "MISSED"}')
v2=$([ "$synth_rss" -le 1024 ] && echo met || echo MISSED)
synth_cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u + s}' "$TMP/synth.time")
echo "| synthetic 1M jobs, 10,000 nodes, EASY | $synth_jobs | <= 10 s, <= 1 GB | $synth_wall | | $synth_cpu | $synth_rss MiB | time $v1, memory $v2 |"

if [ "$ACCASIM" = 1 ]; then
  echo
  echo "Side by side with AccaSim 1.1.3 (its own simulation time, without Python start-up and trace conversion; vgrid: the whole command):"
  echo
  echo "| trace | policy | AccaSim s | vgrid s | AccaSim / vgrid |"
  echo "|---|---|---|---|---|"
  for spec in "lublin_256.swf.gz:256" "KTH-SP2-1996-2.1-cln.swf.gz:100"; do
    f=${spec%%:*}
    p=${spec##*:}
    zcat "$TRACES/$f" >"$TMP/trace.swf"
    bash "$SHARED/peers/accasim-run.sh" "$TMP/trace.swf" "$p" >"$TMP/acc.csv" 2>"$TMP/acc.err" || true
    for pol in FIFO EASY; do
      ours_pol=$([ "$pol" = FIFO ] && echo fcfs || echo easy)
      acc=$(awk -F, -v p="$pol" '$1 == p {print $5}' "$TMP/acc.csv")
      read -r _ med _ < <(stats "$VGRID" sim --trace "$TMP/trace.swf" --procs "$p" --policy "$ours_pol" --json)
      if [ -n "$acc" ]; then
        ratio=$(awk -v a="$acc" -v m="$med" 'BEGIN {printf "%.0f", a / m}')
        echo "| ${f%%.swf.gz} | $pol | $acc | $med | ${ratio}x |"
      else
        echo "| ${f%%.swf.gz} | $pol | failed (see accasim-run.sh output) | $med | |"
      fi
    done
  done
fi
