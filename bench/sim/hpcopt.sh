#!/usr/bin/env bash
# HPCOpt's `sim-runner` (github.com/ErenAri/HPC-workload-optimizer, Apache-2.0,
# Rust) as a peer of `vgrid sim`. Its code is not copied into this tree: it
# is built from a checkout outside it, in a cache directory.
#
#   bash bench/sim/hpcopt.sh build              # prints the sim-runner path
#   bash bench/sim/hpcopt.sh convert TRACE PROCS OUT.json
#   bash bench/sim/hpcopt.sh run JSON PROCS fcfs|easy
#
# The source comes from HPCOPT_SRC (a checkout: the directory holding
# rust/Cargo.toml) or else from HPCOPT_GIT (a git directory, by default the
# mirror /work/.mirror/ErenAri+HPC-workload-optimizer/repo; elsewhere, a
# `git clone --bare https://github.com/ErenAri/HPC-workload-optimizer`),
# whose HEAD is extracted into the cache. The build needs crates.io only
# (anyhow, clap, serde, serde_json) and uses HPCOpt's own release profile
# (LTO, one codegen unit).
#
# sim-runner reads a JSON array of jobs; `convert` makes it from an SWF
# trace with bench/sim/swf_to_hpcopt.py, keeping the jobs vgrid keeps. The
# conversion is done once, before timing, and is never counted in
# sim-runner's time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${VGRID_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vgrid-bench}
HPCOPT_GIT=${HPCOPT_GIT:-/work/.mirror/ErenAri+HPC-workload-optimizer/repo}

build() {
  local src=${HPCOPT_SRC:-}
  if [ -z "$src" ]; then
    [ -d "$HPCOPT_GIT" ] || {
      echo "hpcopt.sh: no HPCOPT_SRC and no git directory at $HPCOPT_GIT" >&2
      exit 2
    }
    local rev
    rev=$(git --git-dir="$HPCOPT_GIT" rev-parse HEAD)
    src=$CACHE/hpcopt-$rev
    if [ ! -f "$src/rust/Cargo.toml" ]; then
      mkdir -p "$src"
      git --git-dir="$HPCOPT_GIT" archive HEAD rust | tar -x -C "$src"
    fi
  fi
  local target=$CACHE/hpcopt-target
  (cd "$src/rust" && cargo build --release -q -p sim-runner --target-dir "$target") >&2
  echo "$target/release/sim-runner"
}

case "${1:-}" in
  build) build ;;
  convert)
    [ $# = 4 ] || { echo "usage: hpcopt.sh convert TRACE PROCS OUT.json" >&2; exit 2; }
    python3 "$HERE/swf_to_hpcopt.py" "$2" "$3" "$4"
    ;;
  run)
    [ $# = 4 ] || { echo "usage: hpcopt.sh run JSON PROCS fcfs|easy" >&2; exit 2; }
    case "$4" in
      fcfs) policy=FIFO_STRICT ;;
      easy) policy=EASY_BACKFILL_BASELINE ;;
      *) echo "hpcopt.sh: policy must be fcfs or easy" >&2; exit 2 ;;
    esac
    "${HPCOPT:-$(build)}" --input "$2" --capacity-cpus "$3" --policy "$policy"
    ;;
  *)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
