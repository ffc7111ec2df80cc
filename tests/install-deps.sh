#!/bin/bash
# Installs, with apt-get on Debian 12, every package the build, the tests
# and the demo need. Does nothing when they are all present already.
set -euo pipefail
PKGS="build-essential meson ninja-build pkg-config
	libevent-dev libmsgpack-dev libssl-dev libsystemd-dev libdw-dev libelf-dev libinih-dev
	golang-go golang-github-patrickmn-go-cache-dev
	iproute2 openssl curl python3 procps file systemd wrk
	libnl-nf-3-dev iptables"
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null |
	awk '$NF != "installed" {print $1}'; for p in $PKGS; do
	dpkg-query -W "$p" >/dev/null 2>&1 || echo "$p"; done)
[ -z "$missing" ] && exit 0
echo "installing: $(echo $missing | sort -u | tr '\n' ' ')"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $(echo $missing | tr ' ' '\n' | sort -u)
