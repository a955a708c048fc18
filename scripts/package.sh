#!/usr/bin/env bash
# Builds the Debian package of vgrid: target/debian/vgrid_<version>_<arch>.deb
# (its path is the last line printed).
#
#   bash scripts/package.sh              release build (what to install)
#   bash scripts/package.sh --profile dev   the debug binary (tests: faster)
#
# The man pages and shell completions are made by the binary being packaged
# (`vgrid man DIR`, `vgrid completions SHELL`) into packaging/build/ (not
# kept in git), then cargo-deb (installed with `cargo install` when missing
# or another version) packs what [package.metadata.deb] in
# crates/cli/Cargo.toml lists. Nothing is installed on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case ${1-} in
  "") ;;
  --profile) profile=${2:?--profile needs a name} ;;
  *) echo "usage: $0 [--profile release|dev]" >&2; exit 2 ;;
esac
case $profile in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac

# The cargo-deb the package was made with (it warns that a future version
# will refuse the dev profile).
cargo_deb=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qF " $cargo_deb"; then
  echo "package: installing cargo-deb (cargo install --locked cargo-deb --version $cargo_deb)" >&2
  cargo install --locked cargo-deb --version "$cargo_deb"
fi

cargo build --locked -p vgrid --bin vgrid --profile "$profile"
bin=target/$dir/vgrid

out=packaging/build
rm -rf "$out"
mkdir -p "$out/completions" "$out/man"
"$bin" man "$out/man"
"$bin" completions bash >"$out/completions/vgrid.bash"
"$bin" completions zsh >"$out/completions/_vgrid"
"$bin" completions fish >"$out/completions/vgrid.fish"

# --fast: the debug binary is large and a test package is thrown away.
fast=()
if [ "$profile" = dev ]; then fast=(--fast); fi
cargo deb --locked -p vgrid --no-build --profile "$profile" "${fast[@]}" --output target/debian/
