#!/bin/bash
# `meson install` into a scratch DESTDIR: the daemons land where the units'
# ExecStart= says, the units in systemd's unit directory, the example
# configuration in /etc/checksync; a second install keeps a configuration
# the operator changed (the examples never overwrite).
set -u
build=$1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
passed=0 failed=0
check() { # what, command...
	local what=$1; shift
	if "$@"; then echo "PASS: $what"; passed=$((passed + 1))
	else echo "FAIL: $what"; failed=$((failed + 1)); fi
}
meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >/dev/null 2>"$dest.err" ||
	{ echo "FAIL: meson install: $(cat "$dest.err")"; rm -f "$dest.err"; exit 1; }
rm -f "$dest.err"
for u in primary backup; do
	unit=$(find "$dest" -name "checksync-$u.service" -path '*/systemd/system/*' | head -1)
	check "checksync-$u.service installed in a systemd unit directory" test -n "$unit"
	[ -n "$unit" ] || continue
	exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
	check "ExecStart=$exe of $u exists and is executable" test -x "$dest$exe"
	check "/etc/checksync/$u.conf installed" test -f "$dest/etc/checksync/$u.conf"
done
check "/etc/checksync/services/kvserver.conf installed" test -f "$dest/etc/checksync/services/kvserver.conf"
echo "# changed by the operator" > "$dest/etc/checksync/primary.conf"
meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >/dev/null 2>&1
check "a second install keeps the operator's primary.conf" \
	grep -qx "# changed by the operator" "$dest/etc/checksync/primary.conf"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
