#!/usr/bin/env bash
# VM runtime benchmarks (docs/benchmarks.md, "VM runtime"). Builds vgrid in
# release mode, builds the stock image into a scratch data directory, and
# runs bench/vm/bench.py. Needs root (QEMU runs as the vgrid-vm user, the
# guest mounts a tmpfs), QEMU, passt and about 25 GB of free disk for the
# 10 GB data repository and its copy.
#
#   bash bench/vm/run.sh                      # everything (about 15 minutes)
#   bash bench/vm/run.sh --only start --runs 3
#   bash bench/vm/run.sh --sizes 256 --repo-sizes 10M,1G
#
# Extra arguments go to bench.py; VGRID_BIN=path skips the build. BENCH_WORK=/path chooses the scratch
# directory (default: a new directory under /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."

# VGRID_BIN=path uses an already built binary instead.
if [ -n "${VGRID_BIN:-}" ]; then
  vgrid="$VGRID_BIN"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
  cargo build --release -q -p vgrid
  vgrid="$CARGO_TARGET_DIR/release/vgrid"
fi

work="${BENCH_WORK:-$(mktemp -d /var/tmp/vgrid-bench.XXXXXX)}"
mkdir -p "$work/data" "$work/data2/images"
chmod 755 "$work" "$work/data"
trap 'rm -rf "$work"' EXIT

echo "== building the stock image (cached)" >&2
VGRID_DATA_DIR="$work/data" "$vgrid" image build tiny >&2
ln -sfn "$work/data/images/tiny" "$work/data2/images/tiny"

echo "== host: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB, $(qemu-system-x86_64 --version | head -1)" >&2
python3 bench/vm/bench.py --vgrid "$vgrid" --work "$work" --json "$work/../vgrid-vm-bench.json" "$@"
