#!/usr/bin/env bash
# Simulator benchmarks (issues 2 and 12): prints markdown tables.
#
#   bash bench/sim/run.sh              # vgrid against HPCOpt, and the targets
#   ACCASIM=1 bash bench/sim/run.sh    # also the AccaSim comparison (minutes)
#   VGRID=target/release/vgrid ...      # an existing binary, no build
#   HPCOPT=path/to/sim-runner ...       # an existing sim-runner, no build
#   REPEAT=9 ...                        # repetitions of every timed run
#
# Every time is a whole process (`vgrid sim ... --json`, the gzipped trace
# read included), run REPEAT times, vgrid and HPCOpt's sim-runner
# alternated (bench/sim/pair.py): medians, and the median of the pairwise
# ratios. sim-runner reads JSON made from the same SWF trace beforehand by
# bench/sim/hpcopt.sh (bench/sim/swf_to_hpcopt.py); that conversion is NOT
# counted in its time. Schedules: bench/sim/fingerprints.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared}
TRACES=$SHARED/traces
REPEAT=${REPEAT:-5}
ACCASIM=${ACCASIM:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# VGRID=path/to/vgrid uses an existing release binary instead of building.
if [ -z "${VGRID:-}" ]; then
  cargo build --release -q -p vgrid
  VGRID=$CARGO_TARGET_DIR/release/vgrid
fi
HPCOPT=${HPCOPT:-$(bash bench/sim/hpcopt.sh build)}
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

json_field() {
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval("d" + sys.argv[2]))' "$@"
}

verdict() { awk -v m="$1" -v t="$2" 'BEGIN {print (m <= t) ? "met" : "MISSED"}'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); REPEAT=$REPEAT"

# The large synthetic trace: a modern large machine (300,000 jobs on
# 90,000 processors, 630 processors a job on average), written as SWF so
# that both simulators read the same jobs.
WIDE=$TMP/synthetic-wide-300k.swf
"$VGRID" sim --synthetic 300000 --procs 90000 --synthetic-shape wide --seed 1 \
  --policy fcfs --json --synthetic-out "$WIDE" >/dev/null

# name:file:processors
ROWS=(
  "CTC-SP2:$TRACES/CTC-SP2-1996-3.1-cln.swf.gz:512"
  "CTC-SP2:$TRACES/CTC-SP2-1996-3.1-cln.swf.gz:338"
  "HPC2N:$TRACES/HPC2N-2002-2.2-cln.swf.gz:240"
  "synthetic wide 300k:$WIDE:90000"
)

echo
echo "vgrid against HPCOpt sim-runner (median wall s / median CPU s of the whole process; HPCOpt reads pre-converted JSON, conversion not counted):"
echo
echo "| trace | procs | policy | jobs | vgrid wall | vgrid CPU | HPCOpt wall | HPCOpt CPU | vgrid/HPCOpt wall | CPU | same mean wait | ratio <= 1.0 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
declare -A MED
ratio_rows=0
ratio_met=0
worst=0
for spec in "${ROWS[@]}"; do
  IFS=: read -r name file procs <<<"$spec"
  json=$TMP/$(basename "$file").$procs.json
  bash bench/sim/hpcopt.sh convert "$file" "$procs" "$json" 2>/dev/null
  for policy in fcfs easy; do
    hp=$([ "$policy" = fcfs ] && echo FIFO_STRICT || echo EASY_BACKFILL_BASELINE)
    vcmd=("$VGRID" sim --trace "$file" --procs "$procs" --policy "$policy" --json)
    hcmd=("$HPCOPT" --input "$json" --capacity-cpus "$procs" --policy "$hp")
    "${vcmd[@]}" >"$TMP/v.json"
    "${hcmd[@]}" >"$TMP/h.json" 2>/dev/null
    jobs=$(json_field "$TMP/v.json" '["jobs"]')
    hjobs=$(json_field "$TMP/h.json" '["metrics"]["jobs_total"]')
    vw=$(json_field "$TMP/v.json" '["mean_wait_s"]')
    hw=$(json_field "$TMP/h.json" '["metrics"]["mean_wait_sec"]')
    # HPCOpt's EASY backfills with the real run time, vgrid's with the
    # user's estimate: their EASY schedules differ by design.
    same=$(awk -v a="$vw" -v b="$hw" -v j="$jobs" -v k="$hjobs" -v p="$policy" 'BEGIN {
      d = a - b; if (d < 0) d = -d
      if (j == k && d <= 1e-6 * (a > 1 ? a : 1)) print "yes"
      else if (p == "easy" && j == k) printf "differs by design (%.0f / %.0f s)\n", a, b
      else print "NO (" j " jobs, " a " s / " k " jobs, " b " s)" }')
    read -r vwall vcpu hwall hcpu ratio < <(python3 bench/sim/pair.py "$REPEAT" "${vcmd[@]}" -- "${hcmd[@]}")
    MED["$name/$procs/$policy"]=$vwall
    ratio_rows=$((ratio_rows + 1))
    [ "$(verdict "$ratio" 1.0)" = met ] && ratio_met=$((ratio_met + 1))
    worst=$(awk -v a="$worst" -v b="$ratio" 'BEGIN {print (b > a) ? b : a}')
    cratio=$(awk -v a="$vcpu" -v b="$hcpu" 'BEGIN {printf "%.3f", a / b}')
    echo "| $name | $procs | $policy | $jobs | $vwall | $vcpu | $hwall | $hcpu | $ratio | $cratio | $same | $(verdict "$ratio" 1.0) |"
  done
done

# Synthetic: 1,000,000 jobs on 10,000 nodes, EASY.
/usr/bin/time -v "$VGRID" sim --synthetic 1000000 --procs 10000 --seed 1 --policy easy --json \
  >"$TMP/synth.json" 2>"$TMP/synth.time"
synth_rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$TMP/synth.time")
read -r _ synth_med synth_cpu < <(stats "$VGRID" sim --synthetic 1000000 --procs 10000 --seed 1 --policy easy --json)

echo
echo "Targets (median wall s):"
echo
echo "| target | measured | result |"
echo "|---|---|---|"
ctc=${MED["CTC-SP2/338/easy"]}
echo "| CTC-SP2 EASY (338 procs, the header's), gzipped trace read included, <= 0.05 s | $ctc | $(verdict "$ctc" 0.05) |"
echo "| synthetic 1M jobs, 10,000 nodes, EASY, <= 1 s (\`vgrid sim --synthetic 1000000 --procs 10000 --seed 1\`) | $synth_med (CPU $synth_cpu, peak RSS $synth_rss MiB) | $(verdict "$synth_med" 1) |"
for policy in fcfs easy; do
  w=${MED["synthetic wide 300k/90000/$policy"]}
  echo "| synthetic wide 300k jobs, 90,000 procs, $policy, <= 1 s | $w | $(verdict "$w" 1) |"
done
echo "| vgrid/HPCOpt <= 1.0 on every row | $ratio_met of $ratio_rows rows, worst ${worst}x | $([ "$ratio_met" = "$ratio_rows" ] && echo met || echo MISSED) |"

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
