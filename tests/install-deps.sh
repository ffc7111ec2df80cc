#!/bin/bash
# Installs, with apt-get on Debian 12, every package the build, the tests
# and the demo need. Does nothing when they are all present already.
# The newer Go toolchains (the Go-version matrix in tests/meson.build) come
# from bookworm-backports, which is added as a source for them alone: apt
# never prefers a backport unless asked with -t, so nothing else changes.
set -euo pipefail
PKGS="build-essential meson ninja-build pkg-config
	libevent-dev libmsgpack-dev libssl-dev libsystemd-dev libdw-dev libelf-dev libinih-dev
	liblz4-dev libzstd-dev libxxhash-dev
	golang-go golang-github-patrickmn-go-cache-dev
	iproute2 openssl curl python3 procps file systemd wrk
	debootstrap systemd-container prometheus prometheus-pushgateway
	libnl-nf-3-dev iptables
	etcd-server etcd-client libcurl4-openssl-dev libjson-c-dev
	clang-14 libclang-rt-14-dev"
BACKPORTS_PKGS="golang-1.21-go golang-1.22-go golang-1.23-go"

missing() { # the packages of "$@" that are not installed
	{ dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null |
		awk '$NF != "installed" {print $1}'
	  for p in "$@"; do dpkg-query -W "$p" >/dev/null 2>&1 || echo "$p"; done; } | sort -u | tr '\n' ' '
}

add_backports() {
	grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
	cat > /etc/apt/sources.list.d/checksync-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

# Packages installed for the tests must not start their services (prometheus
# would listen on :9090): a policy-rc.d that refuses every start, for the
# length of this script, as Debian's chroot builders do.
no_service_starts() {
	[ -e /usr/sbin/policy-rc.d ] && return 0
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
}

main_missing=$(missing $PKGS)
bpo_missing=$(missing $BACKPORTS_PKGS)
[ -z "${main_missing// /}${bpo_missing// /}" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
[ -n "${bpo_missing// /}" ] && add_backports
no_service_starts
echo "installing: $main_missing$bpo_missing"
apt-get update -q
[ -n "${main_missing// /}" ] && apt-get install -y -q --no-install-recommends $main_missing
[ -n "${bpo_missing// /}" ] && apt-get install -y -q --no-install-recommends -t bookworm-backports $bpo_missing
# prometheus-pushgateway (a real Go service as Debian ships it, stripped with a
# .gnu_debuglink, for tests/test_pushgateway.py) is run by the tests alone: not
# at boot either. systemctl disable edits links with or without systemd running.
if [[ " $main_missing " == *" prometheus-pushgateway "* ]]; then
	update-rc.d prometheus-pushgateway disable >/dev/null 2>&1 || true
	systemctl disable prometheus-pushgateway.service >/dev/null 2>&1 || true
fi
exit 0
