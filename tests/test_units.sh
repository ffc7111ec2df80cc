#!/bin/bash
# systemd-analyze verify on both units, with ExecStart (@BINDIR@, which
# `meson install` fills in) pointed at the binaries just built. verify
# returns 0 even for keys it ignores, so any output counts as a failure; a
# deliberately broken copy must produce some, or the check proves nothing.
set -u
build=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
src=$(dirname "$0")/../systemd
passed=0 failed=0

check() { # what, expect-output(0|1), files...
	local what=$1 expect=$2; shift 2
	local out
	out=$(systemd-analyze verify --man=no "$@" 2>&1)
	if { [ "$expect" = 0 ] && [ -z "$out" ]; } || { [ "$expect" = 1 ] && [ -n "$out" ]; }; then
		echo "PASS: $what"; passed=$((passed + 1))
	else
		echo "FAIL: $what: output: ${out:-(none)}"; failed=$((failed + 1))
	fi
}

for u in primary backup; do
	sed "s|@BINDIR@/checksync-${u}d|$build/${u}d/checksync-${u}d|" \
		"$src/checksync-$u.service" > "$dir/checksync-$u.service"
done
check "both units verify cleanly" 0 "$dir/checksync-primary.service" "$dir/checksync-backup.service"
sed 's/^Type=notify/Type=notiffy/' "$dir/checksync-primary.service" > "$dir/broken.service"
check "a broken copy is reported (control)" 1 "$dir/broken.service"
grep -q '^Type=notify$' "$src/checksync-primary.service" && grep -q '^Type=notify$' "$src/checksync-backup.service" &&
	grep -q '^WatchdogSec=' "$src/checksync-primary.service" && grep -q '^StateDirectory=' "$src/checksync-backup.service" &&
	{ echo "PASS: Type=notify, WatchdogSec, StateDirectory present"; passed=$((passed + 1)); } ||
	{ echo "FAIL: Type=notify/WatchdogSec/StateDirectory missing"; failed=$((failed + 1)); }
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
