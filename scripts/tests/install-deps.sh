#!/usr/bin/env bash
# Tests the logic of scripts/install-deps.sh in a fake Debian: fake apt-get,
# apt-cache, dpkg-query, id and cc, and one fake program per tool, first
# and alone on PATH. The real apt is never called and nothing outside a
# temporary directory is touched.
#
# The fake apt-get models the trap of issue 9: with qemu-utils installed
# from bookworm-backports, installing qemu-system-x86 from bookworm removes
# qemu-utils unless it is named in the same transaction; named, apt finds
# no solution; named as qemu-utils/bookworm with --allow-downgrades, it is
# downgraded and both are installed.
#
#   bash scripts/tests/install-deps.sh [SCRIPT]   (default: ../install-deps.sh)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
script=${1:-$here/../install-deps.sh}
bash_bin=$BASH

# Package -> the fake programs (or files) that installing it provides.
declare -A provides=(
  [qemu-system-x86]=qemu-system-x86_64
  [qemu-utils]=qemu-img
  [passt]=passt
  [busybox-static]=busybox
  [e2fsprogs]=mkfs.ext4
  [xz-utils]=xz
  [zstd]=zstd
  [dpkg]=dpkg-deb
  [apt]=""
  [coreutils]=sha256sum
  [passwd]=useradd
  [mount]=mount
  [procps]=kill
  [iproute2]="ip tc"
  [libc6-dev]=@lib/libc.a
  [g++]=g++
  [python3-venv]=python3
  [fonts-dejavu-core]=@font.ttf
  [chromium]=chromium
  [systemd]=systemd-analyze
)

# Part of every Debian system: named to apt only when their tool is missing.
base=(dpkg apt coreutils passwd mount systemd)
is_base() { [[ " ${base[*]} " == *" $1 "* ]]; }

# A fresh fake machine in $root: every package installed from bookworm,
# apt's lists present, root. Cases then take things away.
new_machine() {
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/sys" "$root/db" "$root/lib"
  # The few real programs the fakes use; nothing else of the host is on PATH.
  local p
  for p in cat rm mkdir chmod touch grep; do
    ln -s "$(type -P "$p")" "$root/sys/$p"
  done
  printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n' >"$root/os-release"
  echo 0 >"$root/uid"
  touch "$root/lists" "$root/apt.log"
  fake id 'echo "$(cat "$FAKE/uid")"'
  fake cc '
if [ "${1-}" = -print-file-name=libc.a ] && [ -f "$FAKE/lib/libc.a" ]; then
  echo "$FAKE/lib/libc.a"
else
  echo libc.a
fi'
  fake apt-cache '[ "$*" = "show linux-image-amd64" ] && [ -e "$FAKE/lists" ]'
  fake dpkg-query '
pkg=${!#}
[ -e "$FAKE/db/$pkg" ] && printf "install ok installed"'
  fake apt-get "$(apt_get_fake)"
  for p in "${!provides[@]}"; do
    install_pkg "$p" bookworm
  done
}

# Writes an executable fake program into $root/bin.
fake() {
  printf '#!%s\nFAKE=%q\n%s\n' "$bash_bin" "$root" "$2" >"$root/bin/$1"
  chmod +x "$root/bin/$1"
}

# Marks a package installed at `version` (bookworm or backports) and
# creates what it provides.
install_pkg() {
  local pkg=$1 version=$2 item
  echo "$version" >"$root/db/$pkg"
  for item in ${provides[$pkg]}; do
    if [[ $item == @* ]]; then
      touch "$root/${item#@}"
    else
      fake "$item" 'exit 0'
    fi
  done
}

remove_pkg() {
  local pkg=$1 item
  rm -f "$root/db/$pkg"
  for item in ${provides[$pkg]}; do
    if [[ $item == @* ]]; then rm -f "$root/${item#@}"; else rm -f "$root/bin/$item"; fi
  done
}

# The fake apt-get: logs every call; `install` resolves the qemu trap as
# described at the top, then installs what was asked. Knobs: the file
# $FAKE/unsolvable makes every install fail; $FAKE/break-after names a
# program that disappears after a successful install.
apt_get_fake() {
  declare -p provides
  cat <<'EOF'
if [ "$*" = --version ]; then echo "apt 2.6.1 (fake)"; exit 0; fi
echo "$*" >>"$FAKE/apt.log"
case ${1-} in
  update) touch "$FAKE/lists"; exit 0 ;;
  install) shift ;;
  *) echo "fake apt-get: unexpected $*" >&2; exit 2 ;;
esac
downgrades=false
declare -A want=()
for a in "$@"; do
  case $a in
    --allow-downgrades) downgrades=true ;;
    -*) ;;
    */*) want[${a%%/*}]=${a#*/} ;;
    *) want[$a]=default ;;
  esac
done
if [ -e "$FAKE/unsolvable" ]; then
  echo "E: Unable to correct problems, you have held broken packages." >&2
  exit 100
fi
for p in "${!want[@]}"; do
  if [ -z "${provides[$p]+set}" ]; then
    echo "E: Unable to locate package $p" >&2
    exit 100
  fi
done
installed() { cat "$FAKE/db/$1" 2>/dev/null || true; }
if [ "$(installed qemu-utils)" = backports ] && [ -n "${want[qemu-system-x86]+set}" ]; then
  case ${want[qemu-utils]-absent} in
    absent)
      # apt's own way out: qemu-utils goes.
      echo "The following packages will be REMOVED: qemu-utils"
      rm -f "$FAKE/db/qemu-utils" "$FAKE/bin/qemu-img"
      ;;
    default)
      echo "E: Unable to correct problems, you have held broken packages." >&2
      exit 100
      ;;
    bookworm)
      if [ "$downgrades" != true ]; then
        echo "E: Packages were downgraded and -y was used without --allow-downgrades." >&2
        exit 100
      fi
      ;;
  esac
fi
for p in "${!want[@]}"; do
  echo bookworm >"$FAKE/db/$p"
  for item in ${provides[$p]}; do
    if [[ $item == @* ]]; then
      touch "$FAKE/${item#@}"
    else
      printf '#!%s\nexit 0\n' "$BASH" >"$FAKE/bin/$item"
      chmod +x "$FAKE/bin/$item"
    fi
  done
done
if [ -e "$FAKE/break-after" ]; then
  rm -f "$FAKE/bin/$(cat "$FAKE/break-after")"
fi
exit 0
EOF
}

# Runs the script under test in the fake machine; sets `status`, `err`.
run_script() {
  local out
  set +e
  out=$(env -i HOME="$root" PATH="$root/bin:$root/sys" \
    VGRID_OS_RELEASE="$root/os-release" VGRID_PLOT_FONT="$root/font.ttf" \
    VGRID_SBIN_PATH="" "$bash_bin" "$script" 2>&1)
  status=$?
  set -e
  err=$out
}

failures=0
cases=0
fail() {
  echo "FAIL [$case]: $*" >&2
  echo "  script output:" >&2
  printf '%s\n' "$err" | sed 's/^/    /' >&2
  echo "  apt-get calls:" >&2
  sed 's/^/    /' "$root/apt.log" >&2
  failures=$((failures + 1))
}
expect() { # expect DESCRIPTION COMMAND...
  local what=$1
  shift
  "$@" || fail "$what"
}
has_line() { grep -q -- "$1" <<<"$err"; }
names() { [[ " $1 " == *" $2 "* ]]; }
not() { ! "$@"; }
apt_calls() { grep -c . "$root/apt.log" || true; }
every_tool_present() {
  local p item
  for p in "${!provides[@]}"; do
    for item in ${provides[$p]}; do
      if [[ $item == @* ]]; then
        [ -f "$root/${item#@}" ] || return 1
      else
        [ -x "$root/bin/$item" ] || return 1
      fi
    done
  done
}
begin() {
  case=$1
  cases=$((cases + 1))
  new_machine
}
end() { rm -rf "$root"; }

# 1. The trap: qemu-utils from backports, qemu-system-x86, passt and
#    busybox-static missing. apt would remove qemu-utils if asked only for
#    the missing ones; the script must end with every tool present.
begin "a package that apt removes while installing another"
install_pkg qemu-utils backports
for p in qemu-system-x86 passt busybox-static; do remove_pkg "$p"; done
run_script
expect "exits 0 (status $status)" [ "$status" = 0 ]
expect "every tool is present at the end (qemu-img: $(ls "$root/bin" | grep -c qemu-img))" every_tool_present
first=$(grep -m1 '^install' "$root/apt.log" || true)
for p in "${!provides[@]}"; do
  if is_base "$p"; then
    expect "the first install leaves out $p, present: $first" not names "$first" "$p"
  else
    expect "the first install names $p, installed or not: $first" names "$first" "$p"
  fi
done
expect "a second install pins every package to bookworm with --allow-downgrades" \
  grep -q -- '--allow-downgrades.*qemu-utils/bookworm' "$root/apt.log"
expect "qemu-utils ends at the release's version" grep -qx bookworm "$root/db/qemu-utils"
end

# 2. apt says it succeeded but a tool is gone anyway: fail loudly, naming
#    the tool and its package.
begin "a tool gone after apt succeeded"
remove_pkg passt
echo qemu-img >"$root/break-after"
run_script
expect "exits non-zero" [ "$status" != 0 ]
expect "names qemu-img and qemu-utils" has_line '`qemu-img` is not on PATH.*qemu-utils'
end

# 3. Everything present and apt's lists there: nothing to do.
begin "all present"
run_script
expect "exits 0 (status $status)" [ "$status" = 0 ]
expect "apt-get is never called ($(apt_calls) calls)" [ "$(apt_calls)" = 0 ]
end

# 4. Everything present but no apt lists: only `apt-get update`.
begin "all present, no apt lists"
rm "$root/lists"
run_script
expect "exits 0 (status $status)" [ "$status" = 0 ]
expect "only apt-get update" [ "$(cat "$root/apt.log")" = "update -qq" ]
end

# 5. Not root and something missing or broken: a clear message, non-zero,
#    and apt is never called.
begin "not root, something missing"
echo 1000 >"$root/uid"
remove_pkg passt
remove_pkg fonts-dejavu-core
fake qemu-img 'exit 1'
run_script
expect "exits non-zero" [ "$status" != 0 ]
expect "names passt and its package" has_line '`passt` is not on PATH.*Debian package passt'
expect "names the missing font file" has_line "$root/font.ttf is missing.*fonts-dejavu-core"
expect "names qemu-img, which does not run" has_line '`qemu-img --version` fails.*qemu-utils'
expect "says to run as root" has_line 'as root'
expect "apt-get is never called" [ "$(apt_calls)" = 0 ]
end

# 6. apt finds no solution even pinned: a clear failure after two tries.
begin "apt cannot install the set at all"
remove_pkg libc6-dev
touch "$root/unsolvable"
run_script
expect "exits non-zero" [ "$status" != 0 ]
expect "says the pinned try failed too" has_line 'from bookworm either'
expect "tried twice" [ "$(grep -c '^install' "$root/apt.log")" = 2 ]
end

# 7. A base package (never upgraded on the way) is named once its tool is
#    missing.
begin "a base package's tool missing"
remove_pkg passwd
run_script
expect "exits 0 (status $status)" [ "$status" = 0 ]
first=$(grep -m1 '^install' "$root/apt.log" || true)
expect "the install names passwd: $first" names "$first" passwd
expect "the install leaves out dpkg: $first" not names "$first" dpkg
expect "useradd is back" [ -x "$root/bin/useradd" ]
end

# 8. No VERSION_CODENAME to pin to: a clear failure, no second try.
begin "no codename to pin to"
install_pkg qemu-utils backports
remove_pkg qemu-system-x86
echo 'NAME="Debian"' >"$root/os-release"
run_script
expect "exits non-zero" [ "$status" != 0 ]
expect "says why" has_line 'names no VERSION_CODENAME'
end

# 9. One of a package's two tools gone (iproute2 gives ip and tc): the
#    message names the tool and the package; as root, apt reinstalls it.
begin "one tool of a package with two"
rm -f "$root/bin/tc"
echo 1000 >"$root/uid"
run_script
expect "exits non-zero" [ "$status" != 0 ]
expect "names tc and iproute2" has_line '`tc` is not on PATH.*Debian package iproute2'
expect "does not blame ip" not has_line '`ip` is not on PATH'
echo 0 >"$root/uid"
run_script
expect "as root, exits 0 (status $status)" [ "$status" = 0 ]
first=$(grep -m1 '^install' "$root/apt.log" || true)
expect "the install names iproute2: $first" names "$first" iproute2
expect "tc is back" [ -x "$root/bin/tc" ]
end

if [ "$failures" -gt 0 ]; then
  echo "install-deps test: $failures failure(s) in $cases cases" >&2
  exit 1
fi
echo "install-deps test: $cases cases passed" >&2
