#!/usr/bin/env bash
# CheckSync demo: a Go key/value service fails over from host A to host B.
#
# Hosts A and B are two network namespaces on this machine joined by a veth pair
# (10.213.N.1 on A, 10.213.N.2 on B; nothing is added to the host's own network).
# The demo starts kvserver (tests/workloads/kvserver, a cgo build) on A, writes
# 100 keys to it, dumps it with checksync-primaryd, kills it with SIGKILL,
# restores the image on B with checksync-backupd, and reads the 100 keys back
# from B's address. Everything it creates is removed on exit.
#
# Usage, as root: tests/demo.sh
# Builds the project into build/ first if needed. CHECKSYNC_PRIMARYD and
# CHECKSYNC_BACKUPD, if set, name other engine binaries to use.
set -euo pipefail

cd "$(dirname "$0")/.."
PORT=8080
KEYS=100
work=$PWD/build/demo
suffix=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
A=cs-a-$suffix
B=cs-b-$suffix
net=$((RANDOM % 254 + 1))
ADDR_A=10.213.$net.1
ADDR_B=10.213.$net.2
orig_pid=
restored_pid=

step() { printf '\n== %s\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
in_a() { ip netns exec "$A" "$@"; }

cleanup() {
	local ns pid
	[ -n "$orig_pid" ] && kill -9 "$orig_pid" 2>/dev/null
	for ns in "$A" "$B"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
		ip netns del "$ns" 2>/dev/null
	done
	return 0
}
trap cleanup EXIT
trap 'echo "demo: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

step "Installing what the build needs (apt-get, only what is missing)"
tests/install-deps.sh

step "Building CheckSync into build/"
[ -f build/build.ninja ] || meson setup build
meson compile -C build
PRIMARYD=${CHECKSYNC_PRIMARYD:-$PWD/build/primaryd/checksync-primaryd}
BACKUPD=${CHECKSYNC_BACKUPD:-$PWD/build/backupd/checksync-backupd}

step "Building the kvserver workload (cgo, dynamically linked)"
mkdir -p "$work"
rm -rf "$work/image"
(cd tests/workloads/kvserver &&
	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$work/gocache go build -o "$work/kvserver" .)
file -b "$work/kvserver" | cut -d, -f1-5

step "Creating host A ($A, $ADDR_A) and host B ($B, $ADDR_B)"
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link set lo up
ip -n "$B" link set lo up
ip -n "$A" link add veth0 type veth peer name veth1 netns "$B"
ip -n "$A" addr add "$ADDR_A/24" dev veth0
ip -n "$B" addr add "$ADDR_B/24" dev veth1
ip -n "$A" link set veth0 up
ip -n "$B" link set veth1 up

step "Starting kvserver on host A, port $PORT"
ip netns exec "$A" "$work/kvserver" -addr "0.0.0.0:$PORT" >"$work/kvserver.log" 2>&1 &
orig_pid=$! # ip netns exec execs the command in place: this is kvserver's pid
for _ in $(seq 100); do
	in_a curl -sf "http://$ADDR_A:$PORT/state" >/dev/null && break
	sleep 0.1
done
in_a curl -sf "http://$ADDR_A:$PORT/state" || fail "kvserver does not answer on host A"

step "Writing $KEYS keys to host A"
for i in $(seq "$KEYS"); do
	in_a curl -sf "http://$ADDR_A:$PORT/set?k=key$i&v=value-$i" >/dev/null || fail "writing key$i to host A"
done
in_a curl -sf "http://$ADDR_A:$PORT/state"

step "Dumping pid $orig_pid on host A"
in_a "$PRIMARYD" dump --pid "$orig_pid" --image "$work/image"
cat "$work/image/report.json"
echo

step "Host A's service dies: kill -9 $orig_pid"
kill -9 "$orig_pid"
wait "$orig_pid" 2>/dev/null || true
orig_pid=

step "Restoring the image on host B"
ip netns exec "$B" "$BACKUPD" restore --image "$work/image" >"$work/restore.out"
read -r restored_pid <"$work/restore.out" || fail "restore printed no pid"
echo "restored pid $restored_pid"

step "Reading the $KEYS keys back from host B ($ADDR_B), as a client on host A"
state=$(in_a curl -sf --retry 5 --retry-connrefused --retry-delay 1 "http://$ADDR_B:$PORT/state") ||
	fail "nothing answers at host B's address"
echo "$state"
[[ $state == *"\"pid\":$restored_pid,"* || $state == *"\"pid\":$restored_pid}"* ]] ||
	fail "host B's /state does not report pid $restored_pid"
intact=0
for i in $(seq "$KEYS"); do
	if v=$(in_a curl -sf "http://$ADDR_B:$PORT/get?k=key$i") && [[ $v == *"\"v\":\"value-$i\""* ]]; then
		intact=$((intact + 1))
	fi
done

echo
echo "restored pid $restored_pid on host B, $intact/$KEYS keys intact"
[ "$intact" -eq "$KEYS" ] || fail "$((KEYS - intact)) keys lost or changed"
