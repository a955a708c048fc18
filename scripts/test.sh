#!/usr/bin/env bash
# The one command that runs every test: formatting, lints, unit and property
# tests, and the tests that boot real QEMU VMs. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
echo "== scripts/tests/install-deps.sh (fake apt)" >&2
bash scripts/tests/install-deps.sh

echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "== fuzz targets build" >&2
cargo check --locked --manifest-path fuzz/Cargo.toml
echo "== cargo test" >&2
cargo test --workspace
echo "== scripts/tests/package.sh (the .deb, unpacked into a temporary root)" >&2
bash scripts/tests/package.sh
