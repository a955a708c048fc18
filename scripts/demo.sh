#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root) and runs vgrid's main job:
# jobs in real QEMU VMs through the embedded server, among them a
# best-effort job that a normal job preempts (checkpoint, requeue) and that
# then resumes from its checkpoint with the same output as an uninterrupted
# run; then a replay of a real workload trace through the same scheduling
# core.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

say() { printf '\n== %s\n' "$*" >&2; }

say "installing the Debian packages vgrid needs"
bash scripts/install-deps.sh
say "building vgrid (release)"
cargo build --release -p vgrid
vgrid=${CARGO_TARGET_DIR:-$repo/target}/release/vgrid

# A fresh state directory for every run; downloaded guest packages are kept.
export VGRID_DATA_DIR=${VGRID_DATA_DIR:-$repo/target/demo/state}
export VGRID_IMAGE_CACHE=${VGRID_IMAGE_CACHE:-$repo/target/demo/cache}
rm -rf "$VGRID_DATA_DIR"
mkdir -p "$VGRID_DATA_DIR" "$VGRID_IMAGE_CACHE"

say "building the stock guest image (Debian kernel + busybox + vgrid's guest agent)"
"$vgrid" image build
"$vgrid" image ls

say "starting the embedded server (controller, SQLite, local node agent)"
"$vgrid" serve --listen 127.0.0.1:0 --cpus 2 --memory-mb 2048 >"$VGRID_DATA_DIR/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$VGRID_DATA_DIR/url" ] && break; sleep 0.1; done
"$vgrid" nodes

state_of() { "$vgrid" show "$1" --json | grep -m1 '"state"' | sed 's/.*"state": *"\([a-z-]*\)".*/\1/'; }

say "a job in a VM: examples/hello.toml"
hello=$("$vgrid" submit examples/hello.toml)
"$vgrid" wait "$hello"
"$vgrid" logs "$hello"

say "a job with data (examples/words.toml): its input goes up, its outputs come back"
words=$("$vgrid" submit examples/words.toml)
"$vgrid" wait "$words"
"$vgrid" output "$words" --to "$VGRID_DATA_DIR/words-out"
cat "$VGRID_DATA_DIR/words-out/counts.txt" "$VGRID_DATA_DIR/words-out/summary/total.txt"

say "a best-effort job (examples/count-best-effort.toml) counts to 60 on the idle node"
count=$("$vgrid" submit examples/count-best-effort.toml)
for _ in $(seq 1 600); do [ "$(state_of "$count")" = running ] && break; sleep 0.5; done
sleep 10
say "a normal job that needs the whole node (examples/urgent.toml) preempts it"
urgent=$("$vgrid" submit examples/urgent.toml)
"$vgrid" ps
"$vgrid" wait "$urgent"
"$vgrid" logs "$urgent"
say "the best-effort job resumes from its checkpoint and finishes"
"$vgrid" wait "$count"
"$vgrid" show "$count" | grep -E 'state:|preempted|resuming|restoring|done' || true
if diff <("$vgrid" logs "$count") <(seq 1 60) >/dev/null; then
  echo "output of job $count: 1..60, identical to an uninterrupted run"
else
  echo "output of job $count differs from an uninterrupted run:" >&2
  "$vgrid" logs "$count" | tr '\n' ' ' >&2
  exit 1
fi
"$vgrid" ps --all

say "replaying a real trace through the same core: CTC-SP2 (77,222 jobs), EASY backfilling"
traces=${VGRID_TRACES:-$repo/../shared/traces}
"$vgrid" sim --trace "$traces/CTC-SP2-1996-3.1-cln.swf.gz" --policy easy
