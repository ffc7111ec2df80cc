#!/bin/bash
# Installs, with apt-get on Debian 12, every package the build, the tests
# and the demo need. Does nothing when they are all present already.
# PKGS are installed as they come; prometheus-pushgateway, below, without
# letting it start.
set -euo pipefail
PKGS="build-essential meson ninja-build pkg-config
	libevent-dev libmsgpack-dev libssl-dev libsystemd-dev libdw-dev libelf-dev libinih-dev
	golang-go golang-github-patrickmn-go-cache-dev
	iproute2 openssl curl python3 procps file systemd wrk"
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null |
	awk '$NF != "installed" {print $1}'; for p in $PKGS; do
	dpkg-query -W "$p" >/dev/null 2>&1 || echo "$p"; done)
export DEBIAN_FRONTEND=noninteractive
if [ -n "$missing" ]; then
	echo "installing: $(echo $missing | sort -u | tr '\n' ' ')"
	apt-get update -q
	apt-get install -y -q --no-install-recommends $(echo $missing | tr ' ' '\n' | sort -u)
fi

# A real Go service as Debian ships it (stripped, with a .gnu_debuglink), for
# tests/test_pushgateway.py. Its maintainer scripts would start it on port
# 9091 and enable it at boot: a policy-rc.d that refuses every start (exit
# 101, as invoke-rc.d and deb-systemd-invoke honour) keeps it from running
# while it installs, and it is disabled afterwards. Only the tests run it.
if ! dpkg-query -W -f='${Status}' prometheus-pushgateway 2>/dev/null | grep -q "ok installed"; then
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	echo "installing: prometheus-pushgateway (not started, not enabled)"
	[ -n "$missing" ] || apt-get update -q
	apt-get install -y -q --no-install-recommends prometheus-pushgateway
	update-rc.d prometheus-pushgateway disable >/dev/null 2>&1 || true
	# systemctl disable edits the unit's links, with or without systemd running.
	if [ -d /run/systemd/system ]; then
		systemctl disable --now prometheus-pushgateway.service >/dev/null 2>&1 || true
	else
		systemctl disable prometheus-pushgateway.service >/dev/null 2>&1 || true
	fi
fi
