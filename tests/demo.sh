#!/usr/bin/env bash
# CheckSync demo: a Go key/value service fails over from host A to host B.
#
# Hosts A and B are two network namespaces on this machine joined by a veth pair
# (10.213.N.1 on A, 10.213.N.2 on B; nothing is added to the host's own network).
# The demo runs checksync-backupd on B and checksync-primaryd on A, which
# starts kvserver (tests/workloads/kvserver, a cgo build) under its guard
# and replicates it to B every 100 ms over mutual TLS. It writes 100 keys,
# kills primaryd and the service with SIGKILL (host A "dies"), waits for B
# to take over, and reads the 100 keys back from B's address. Everything it
# creates is removed on exit.
#
# Usage, as root: tests/demo.sh
# Builds the project into build/ first if needed. CHECKSYNC_PRIMARYD and
# CHECKSYNC_BACKUPD, if set, name other engine binaries to use.
set -euo pipefail

cd "$(dirname "$0")/.."
. tests/lib/demo-setup.sh # the certificates and configuration files
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
rm -rf "$work/image" "$work/a" "$work/b" "$work/tls"
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

step "Making a CA and certificates for both daemons (mutual TLS)"
tls=$work/tls
demo_ca "$tls"
demo_cert "$tls" primary clientAuth
demo_cert "$tls" backup serverAuth

step "Writing the configuration of host A (primary) and host B (backup)"
demo_configs "$work" "$tls" "$ADDR_B" "$PORT" "$work/kvserver"
cat "$work/a/services/kvserver.conf"

step "Starting checksync-backupd on host B and checksync-primaryd on host A"
ip netns exec "$B" "$BACKUPD" --config "$work/b/backup.conf" >"$work/backupd.log" 2>&1 &
disown # killed by cleanup; no job-control chatter
sleep 0.5
ip netns exec "$A" "$PRIMARYD" --config "$work/a/primary.conf" >"$work/primaryd.log" 2>&1 &
primaryd_pid=$!
disown
for _ in $(seq 100); do
	in_a curl -sf "http://$ADDR_A:$PORT/state" >/dev/null && break
	sleep 0.1
done
in_a curl -sf "http://$ADDR_A:$PORT/state" || fail "kvserver does not answer on host A"
orig_pid=$(in_a curl -sf "http://$ADDR_A:$PORT/state" | sed 's/.*"pid":\([0-9]*\).*/\1/')

step "Writing $KEYS keys to the protected service on host A"
for i in $(seq "$KEYS"); do
	in_a curl -sf "http://$ADDR_A:$PORT/set?k=key$i&v=value-$i" >/dev/null || fail "writing key$i to host A"
done
sleep 0.5 # a few epochs, so the backup has acknowledged the last writes
ip netns exec "$A" "$PRIMARYD" status --config "$work/a/primary.conf"
ip netns exec "$B" "$BACKUPD" status --config "$work/b/backup.conf"

step "Host A dies: kill -9 of checksync-primaryd (pid $primaryd_pid) and of the service (pid $orig_pid)"
kill -9 "$primaryd_pid" "$orig_pid" 2>/dev/null || true
t0=$(date +%s%N)
orig_pid=

step "Waiting for host B to take over"
for _ in $(seq 100); do
	in_a curl -sf -m 0.5 "http://$ADDR_B:$PORT/state" >/dev/null && break
	sleep 0.05
done
t1=$(date +%s%N)
state=$(in_a curl -sf "http://$ADDR_B:$PORT/state") || fail "nothing answers at host B's address"
echo "$state"
grep -E "took over|taking over" "$work/backupd.log" || true
restored_pid=$(echo "$state" | sed 's/.*"pid":\([0-9]*\).*/\1/')
ip netns exec "$B" "$BACKUPD" status --config "$work/b/backup.conf"

step "Reading the $KEYS keys back from host B ($ADDR_B), as a client on host A"
intact=0
for i in $(seq "$KEYS"); do
	if v=$(in_a curl -sf "http://$ADDR_B:$PORT/get?k=key$i") && [[ $v == *"\"v\":\"value-$i\""* ]]; then
		intact=$((intact + 1))
	fi
done

echo
echo "host B took over in $(( (t1 - t0) / 1000000 )) ms: restored pid $restored_pid, $intact/$KEYS keys intact"
[ "$intact" -eq "$KEYS" ] || fail "$((KEYS - intact)) keys lost or changed"
