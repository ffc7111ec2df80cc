# tests/lib/demo-setup.sh - the certificates and configuration of tests/demo.sh,
# as functions, so that tests/test_hostile.py checks the very files the demo
# uses. Sourced by bash; each function creates files only under its arguments.

# demo_ca TLS: a CA key and certificate, TLS/ca.key and TLS/ca.pem.
demo_ca() {
	mkdir -p "$1"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
		-subj /CN=demo-ca -keyout "$1/ca.key" -out "$1/ca.pem" 2>/dev/null
	chmod 600 "$1/ca.key"
}

# demo_cert TLS NAME EKU: TLS/NAME.key and TLS/NAME.pem for NAME.demo, signed by
# the CA. The certificate names its host (SAN) and says what it is for: the
# backup listens (serverAuth), the primary connects (clientAuth). Each daemon
# checks both of the other's (primary = and backup_name = in the service file).
demo_cert() {
	local tls=$1 n=$2 eku=$3
	printf 'subjectAltName = DNS:%s.demo\nextendedKeyUsage = %s\n' "$n" "$eku" >"$tls/$n.ext"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$n.demo" \
		-keyout "$tls/$n.key" -out "$tls/$n.csr" 2>/dev/null
	openssl x509 -req -in "$tls/$n.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
		-days 1 -extfile "$tls/$n.ext" -out "$tls/$n.pem" 2>/dev/null
	chmod 600 "$tls/$n.key"
}

# demo_configs WORK TLS ADDR_B PORT KVSERVER: WORK/a/primary.conf and
# WORK/b/backup.conf, and WORK/{a,b}/services/kvserver.conf (the same file).
demo_configs() {
	local work=$1 tls=$2 addr_b=$3 port=$4 kvserver=$5 side role
	for side in a b; do
		role=$([ $side = a ] && echo primary || echo backup)
		mkdir -p "$work/$side/services" "$work/$side/state"
		{
			echo "[daemon]"
			[ $side = b ] && echo "listen = $addr_b:7000"
			echo "state_dir = $work/$side/state"
			echo "services_dir = $work/$side/services"
			echo "status_socket = $work/$side/status.sock"
			echo "[tls]"
			echo "ca = $tls/ca.pem"
			echo "cert = $tls/$role.pem"
			echo "key = $tls/$role.key"
		} >"$work/$side/$role.conf"
		cat >"$work/$side/services/kvserver.conf" <<CONF
[service]
name = kvserver
command = $kvserver -addr 0.0.0.0:$port
executable = $kvserver
backup = $addr_b:7000
backup_name = backup.demo
primary = primary.demo
epoch_interval_ms = 100
CONF
	done
}
