#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root) and runs vgrid's main job.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release
traces=${VGRID_TRACES:-../shared/traces}
echo "== vgrid sim: the CTC-SP2 trace (77,222 jobs) under EASY backfilling" >&2
./target/release/vgrid sim --trace "$traces/CTC-SP2-1996-3.1-cln.swf.gz" --policy easy
