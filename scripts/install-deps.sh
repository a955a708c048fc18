#!/usr/bin/env bash
# Installs the Debian packages vgrid and its tests need, then checks that
# every program they run is on PATH and runs. Idempotent: when every check
# passes and apt's lists exist it does nothing. Installing needs root (CI
# and the README's commands run as root).
#
# Every package goes to apt in ONE transaction, installed ones included, so
# that apt resolves their versions together and cannot remove one of them to
# satisfy another. (Asked only for the missing qemu-system-x86, apt removed
# an installed qemu-utils from bookworm-backports, and `vgrid image build`
# then failed on the missing qemu-img.) When apt finds no solution that keeps
# them all (an installed backports version conflicts with the release's
# version of another package), the same set is asked once more with every
# package pinned to the release (pkg/$VERSION_CODENAME, downgrades allowed).
# Whatever apt did, every check runs again afterwards: a tool still missing
# is an error naming it and its package.
#
# Tests (scripts/tests/install-deps.sh) point these elsewhere:
#   VGRID_OS_RELEASE  the os-release file (default /etc/os-release)
#   VGRID_PLOT_FONT   the font file checked (vgrid's charts embed their own)
#   VGRID_SBIN_PATH   directories searched after PATH (default /usr/sbin:/sbin,
#                     where mkfs.ext4 and useradd live, often not in a user's PATH)
set -euo pipefail

os_release=${VGRID_OS_RELEASE:-/etc/os-release}
font=${VGRID_PLOT_FONT:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}
sbin=${VGRID_SBIN_PATH-/usr/sbin:/sbin}
if [ -n "$sbin" ]; then PATH=$PATH:$sbin; fi

# What vgrid and its tests need, one line each: the Debian package, what it
# is for, and the check (a command that must succeed, `file:PATH` or
# `static-libc`). The package list is taken from here.
checks=(
  "qemu-system-x86|the hypervisor (KVM or TCG)|qemu-system-x86_64 --version"
  "qemu-utils|qcow2 overlays and images|qemu-img --version"
  "passt|user-mode networking for VMs|passt --version"
  "busybox-static|the stock guest's userland|busybox true"
  "e2fsprogs|the stock image's writable disk|mkfs.ext4 -V"
  "xz-utils|the Debian kernel's decompression|xz --version"
  "zstd|the Debian kernel's decompression|zstd --version"
  "dpkg|unpacking the guest's Debian packages|dpkg-deb --version"
  "apt|downloading the guest's Debian packages|apt-get --version"
  "coreutils|checksums of the guest's packages|sha256sum --version"
  "passwd|the unprivileged user QEMU runs as|useradd --help"
  "mount|the tests that mount disk images|mount --version"
  "procps|the tests that stop stray VMs|kill -l"
  "iproute2|the multi-host tests' network namespaces, veth pairs and bridge|ip -V"
  "iproute2|the multi-host tests' link cuts and shaping|tc -V"
  "libc6-dev|the static C library the guest agent links|static-libc"
  "g++|libFuzzer in the fuzz targets' build|g++ --version"
  "python3-venv|the AccaSim peer (benchmarks and validation)|python3 -m ensurepip --version"
  "fonts-dejavu-core|text in the dashboard's screenshots (Chromium)|file:$font"
  "chromium|the dashboard's tests in a headless browser|chromium --version"
  "systemd|checking the packaged units (the package test)|systemd-analyze --version"
)

# Part of every Debian system (Essential or Priority required, and systemd,
# the init of any booted one): named to apt only when their check fails, so
# that installing vgrid's packages never upgrades or (pinned) downgrades
# dpkg, apt, coreutils or the running init on the way.
base=(dpkg apt coreutils passwd mount systemd)

is_base() { case " ${base[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Whether one check passes. Programs are looked up on PATH (`type -P`: never
# a shell builtin or function) and run with their output discarded.
passes() {
  local f
  case $1 in
    file:*) [ -f "${1#file:}" ] ;;
    static-libc)
      f=$(cc -print-file-name=libc.a 2>/dev/null) && [[ $f == /* && -f $f ]]
      ;;
    *)
      f=$(type -P "$1") || return 1
      shift
      "$f" "$@" </dev/null >/dev/null 2>&1
      ;;
  esac
}

# What a failed check lacks, in words.
lacking() {
  case $1 in
    file:*) echo "${1#file:} is missing" ;;
    static-libc) echo "the static C library (libc.a, as \`cc -print-file-name=libc.a\` finds it) is missing" ;;
    *)
      if type -P "$1" >/dev/null; then
        echo "\`$*\` fails"
      else
        echo "\`$1\` is not on PATH"
      fi
      ;;
  esac
}

# Fills `broken` with one line per failed check, and `packages` with the
# packages to name to apt: every one of `checks` but the base ones, and the
# base ones whose check failed.
broken=()
packages=()
run_checks() {
  local line pkg purpose check argv
  broken=()
  packages=()
  for line in "${checks[@]}"; do
    IFS='|' read -r pkg purpose check <<<"$line"
    if [[ $check == file:* ]]; then
      argv=("$check")
    else
      read -ra argv <<<"$check"
    fi
    if ! passes "${argv[@]}"; then
      broken+=("$(lacking "${argv[@]}"): $purpose (Debian package $pkg)")
    elif is_base "$pkg"; then
      continue
    fi
    case " ${packages[*]} " in *" $pkg "*) ;; *) packages+=("$pkg") ;; esac
  done
}

report() {
  echo "install-deps: $1" >&2
  printf '  %s\n' "${broken[@]}" >&2
}

is_root() { [ "$(id -u)" = 0 ]; }

# `vgrid image build` fetches guest packages with `apt-get download`, which
# needs apt's package lists.
need_lists() { ! apt-cache show linux-image-amd64 >/dev/null 2>&1; }

# VERSION_CODENAME from the os-release file, read without running it.
codename() {
  local key value
  [ -r "$os_release" ] || return 0
  while IFS='=' read -r key value; do
    if [ "$key" = VERSION_CODENAME ]; then
      value=${value%\"}
      printf '%s' "${value#\"}"
      return 0
    fi
  done <"$os_release"
}

# One apt transaction; apt's output is shown only when it fails.
apt_install() {
  local out
  if out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" 2>&1); then
    return 0
  fi
  printf '%s\n' "$out" >&2
  return 1
}

run_checks
if [ ${#broken[@]} -eq 0 ]; then
  if need_lists; then
    if is_root; then
      apt-get update -qq
    else
      echo "install-deps: note: apt's package lists are missing; \`vgrid image build\` needs them (run \`apt-get update\` as root)" >&2
    fi
  fi
  exit 0
fi
if ! is_root; then
  report "missing (run this script as root to install them):"
  exit 1
fi

echo "install-deps: installing ${packages[*]} (one apt transaction)" >&2
apt-get update -qq
if ! apt_install "${packages[@]}"; then
  release=$(codename)
  if [ -z "$release" ]; then
    echo "install-deps: apt could not install the packages together, and $os_release names no VERSION_CODENAME to take them all from" >&2
    exit 1
  fi
  echo "install-deps: apt found no solution that keeps every package; asking again for every package from $release" >&2
  if ! apt_install --allow-downgrades "${packages[@]/%//$release}"; then
    echo "install-deps: apt could not install the packages from $release either (its messages are above)" >&2
    exit 1
  fi
fi

run_checks
if [ ${#broken[@]} -gt 0 ]; then
  report "apt finished, but these are still missing:"
  exit 1
fi
echo "install-deps: every tool vgrid and its tests run is there" >&2
