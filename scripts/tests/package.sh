#!/usr/bin/env bash
# Tests the Debian package: builds it (scripts/package.sh --profile dev, the
# debug binary `cargo test` already built: a release build would add many
# minutes on 2 cores), reads its metadata and file list, unpacks it into a
# temporary directory (never into this system's root), then:
# - runs the unpacked `vgrid --version`, and `vgrid serve` with the
#   unpacked /etc/vgrid/vgrid.toml and a PATH without QEMU (it must serve as
#   a controller only and say so);
# - checks the units with `systemd-analyze verify` (any complaint fails);
# - runs the postinst against fake adduser, getent and systemd helpers (it
#   must make the `vgrid` system user and put it in the kvm group);
# - loads the bash completion and reads the man pages.
#
#   bash scripts/tests/package.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  echo "package test: FAIL: $*" >&2
  exit 1
}

# A tool the test needs: missing is a failure under CI, else the test ends.
need() {
  if ! type -P "$1" >/dev/null; then
    if [ "${CI-}" = true ]; then fail "$1 is not installed ($2)"; fi
    echo "package test: skipped: $1 is not installed ($2)" >&2
    exit 0
  fi
}
need dpkg-deb "Debian package dpkg"
need systemd-analyze "Debian package systemd"
need gzip "Debian package gzip"

tmp=$(mktemp -d)
serve_pid=
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

deb=$(bash scripts/package.sh --profile dev | tail -n 1)
[ -f "$deb" ] || fail "scripts/package.sh printed no package path (got \`$deb\`)"
echo "package test: built $deb ($(du -h "$deb" | cut -f1))" >&2

# Metadata: name, the adduser the postinst needs, the config as a conffile.
info=$(dpkg-deb -I "$deb")
grep -q '^ Package: vgrid$' <<<"$info" || fail "the package is not named vgrid: $info"
grep -q '^ Depends: .*adduser' <<<"$info" || fail "the package does not depend on adduser"
grep -q '^ Recommends: .*qemu-system-x86' <<<"$info" || fail "the package does not recommend QEMU"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/vgrid/vgrid.toml ||
  fail "/etc/vgrid/vgrid.toml is not a conffile"

# Contents.
list=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/vgrid ./etc/vgrid/vgrid.toml \
  ./usr/lib/systemd/system/vgrid-serve.service ./usr/lib/systemd/system/vgrid-agent.service \
  ./usr/share/bash-completion/completions/vgrid ./usr/share/zsh/vendor-completions/_vgrid \
  ./usr/share/fish/vendor_completions.d/vgrid.fish ./usr/share/doc/vgrid/config.md \
  ./usr/share/man/man1/vgrid.1.gz; do
  grep -qxF "$f" <<<"$list" || fail "the package lacks $f"
done

# Unpack into a throwaway root.
root=$tmp/root
dpkg-deb -x "$deb" "$root"
bin=$root/usr/bin/vgrid
version=$("$bin" --version)
[ "$version" = "vgrid $(cargo pkgid -p vgrid | sed 's/.*[#@]//')" ] ||
  fail "\`vgrid --version\` says \`$version\`"

# One man page per subcommand, down the tree: as many as the binary makes.
"$bin" man "$tmp/man" 2>/dev/null
made=$(find "$tmp/man" -name '*.1' | wc -l)
shipped=$(grep -c '^\./usr/share/man/man1/vgrid.*\.1\.gz$' <<<"$list")
[ "$made" -ge 20 ] || fail "vgrid man made only $made pages"
[ "$shipped" = "$made" ] || fail "the package has $shipped man pages, vgrid makes $made"
for page in vgrid vgrid-serve vgrid-agent vgrid-users-add vgrid-completions; do
  gz=$root/usr/share/man/man1/$page.1.gz
  [ -f "$gz" ] || fail "no man page $page(1)"
  zcat "$gz" | grep -q "^\.TH $page 1" || fail "$page.1.gz is not the man page of $page"
done

# Completions: bash loads its script and completes `vgrid se` to serve.
words=$(bash -c "source '$root/usr/share/bash-completion/completions/vgrid'
  COMP_WORDS=(vgrid se); COMP_CWORD=1; COMP_LINE='vgrid se'; COMP_POINT=8
  _vgrid vgrid se vgrid; printf '%s\n' \"\${COMPREPLY[@]}\"")
grep -qx serve <<<"$words" || fail "the bash completion of \`vgrid se\` is \`$words\`"
head -n 1 "$root/usr/share/zsh/vendor-completions/_vgrid" | grep -qx '#compdef vgrid' ||
  fail "the zsh completion does not start with #compdef vgrid"
grep -q '^complete -c vgrid ' "$root/usr/share/fish/vendor_completions.d/vgrid.fish" ||
  fail "the fish completion completes no vgrid"

# The units, with ExecStart pointing at the unpacked binary (verify checks
# that it exists). systemd-analyze exits 0 on unknown keys or bad values:
# any output is a failure.
mkdir "$tmp/units"
for unit in vgrid-serve vgrid-agent; do
  sed "s|^ExecStart=/usr/bin/vgrid|ExecStart=$bin|" \
    "$root/usr/lib/systemd/system/$unit.service" >"$tmp/units/$unit.service"
  grep -q "^ExecStart=$bin ${unit#vgrid-}$" "$tmp/units/$unit.service" ||
    fail "$unit.service does not run \`vgrid ${unit#vgrid-}\`"
  grep -qx 'User=vgrid' "$tmp/units/$unit.service" || fail "$unit.service does not run as vgrid"
  out=$(systemd-analyze verify --man=no "$tmp/units/$unit.service" 2>&1) ||
    fail "systemd-analyze verify $unit.service: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $unit.service complains: $out"
done

# The postinst, against fakes that log their arguments: configure on a
# system without the user makes it, a system user with its group, and adds
# it to kvm.
fake=$tmp/fake
mkdir "$fake"
log=$tmp/calls
for cmd in adduser deb-systemd-helper deb-systemd-invoke systemctl; do
  printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$cmd" "$log" >"$fake/$cmd"
done
# getent: no vgrid user yet; the kvm group exists.
printf '#!/bin/sh\necho "getent $*" >>"%s"\n[ "$1" = group ] && [ "$2" = kvm ]\n' "$log" >"$fake/getent"
chmod +x "$fake"/*
dpkg-deb -e "$deb" "$tmp/control"
PATH=$fake:$PATH sh "$tmp/control/postinst" configure ||
  fail "the postinst failed: $(cat "$log")"
grep -qx 'adduser --system --group --home /var/lib/vgrid --no-create-home --gecos vgrid services and their VMs vgrid' "$log" ||
  fail "the postinst did not make the vgrid system user: $(cat "$log")"
grep -qx 'adduser vgrid kvm' "$log" || fail "the postinst did not add vgrid to kvm: $(cat "$log")"
# Installed again (the user exists): no second adduser --system.
: >"$log"
printf '#!/bin/sh\necho "getent $*" >>"%s"\n' "$log" >"$fake/getent"
PATH=$fake:$PATH sh "$tmp/control/postinst" configure 0.1.0-1 || fail "the postinst failed on upgrade"
if grep -q 'adduser --system' "$log"; then fail "the postinst made the user twice"; fi

# The unpacked binary with the unpacked config and no QEMU on PATH: a
# controller only, saying so.
mkdir "$tmp/data"
VGRID_DATA_DIR=$tmp/data PATH=$root/usr/bin "$bin" serve \
  --config "$root/etc/vgrid/vgrid.toml" --insecure-http --listen 127.0.0.1:0 \
  2>"$tmp/serve.err" &
serve_pid=$!
for _ in $(seq 1 300); do
  if grep -q '^vgrid: serving' "$tmp/serve.err"; then break; fi
  kill -0 "$serve_pid" 2>/dev/null || fail "vgrid serve ended: $(cat "$tmp/serve.err")"
  sleep 0.1
done
grep -q '^vgrid: serving http://127.0.0.1:' "$tmp/serve.err" ||
  fail "vgrid serve did not serve: $(cat "$tmp/serve.err")"
grep -q 'qemu-system-x86_64 was not found.*running as a controller only' "$tmp/serve.err" ||
  fail "vgrid serve without QEMU did not say it runs as a controller only: $(cat "$tmp/serve.err")"
if grep -q 'local node agent:' "$tmp/serve.err"; then fail "vgrid serve started a local agent without QEMU"; fi
kill "$serve_pid"
wait "$serve_pid" || true
serve_pid=

echo "package test: ok ($deb)" >&2
