#!/usr/bin/env bash
# Installs the Debian packages vgrid and its tests need, when they are missing.
# Idempotent; needs root (CI and the README's commands run as root).
set -euo pipefail

packages=(
  qemu-system-x86   # the hypervisor (KVM or TCG)
  qemu-utils        # qemu-img: qcow2 overlays
  passt             # user-mode networking for VMs
  busybox-static    # the stock guest's userland
  zstd              # compressed checkpoints (tooling)
  fonts-dejavu-core # the font in PNG plots
  python3-venv      # the AccaSim peer (benchmarks and validation)
  e2fsprogs         # mkfs.ext4: the stock image's writable disk
  xz-utils          # kernel decompression for the stock image
  libc6-dev         # static libc for the guest agent
  g++               # libFuzzer in the fuzz targets' build
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# `vgrid image build` fetches guest packages with `apt-get download`, which
# needs apt's package lists.
need_lists() { ! apt-cache show linux-image-amd64 >/dev/null 2>&1; }
if [ ${#missing[@]} -eq 0 ]; then
  if need_lists && [ "$(id -u)" = 0 ]; then apt-get update -qq; fi
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]}; run this script as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
