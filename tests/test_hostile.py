#!/usr/bin/env python3
"""Hostile peers: only the named hosts get the memory (issue 8, item 1).

Usage: test_hostile.py [FLAVOUR ...]   (example, demo; both without one)

A certificate from the deployment's own CA with another name (an
"intruder") plays each side, with the configuration files of FLAVOUR:

  example  conf/primary.conf, conf/backup.conf and conf/services/kvserver.conf
           as shipped, with only paths and addresses changed for the test
           hosts (names primary.example and backup.example kept).
  demo     the files tests/demo.sh writes (tests/lib/demo-setup.sh), with its
           own certificate commands (primary.demo, backup.demo).

Hosts are network namespaces (tests/lib/replication.py): A runs primaryd and
the service, B the backup, C the intruder.

  as backup   B listens with the intruder's certificate, first as a Python
              TLS server that records every byte it is sent, then as a real
              checksync-backupd: primaryd in A must send it no byte at all
              (no HELLO, no image), its log must say why, and the intruder's
              backupd must hold no epoch.
  as primary  with A replicating to the real backupd, a primaryd in C with
              the intruder's certificate (its own kvserver, its own keys)
              and a raw TLS client with it both connect to B: both are refused
              in the handshake (the raw client receives no byte, the intruder
              primaryd's log never says the backup accepted it), the real
              session is untouched (acknowledged epochs keep rising, the
              backup's log never says a connection replaced A's), and when A
              dies B takes over within the failover timeout (plus restore
              time) with A's process: A's instance id and keys, none of the
              intruder's.
"""

import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

SRC = os.environ.get("CHECKSYNC_SRC", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAKEOVER_SLACK_S = 4.0  # restore and hook on a shared, loaded machine, on top of failover_timeout_ms


# ---------------------------------------------------------------- configuration flavours

def set_keys(text, **values):
    """TEXT with the `key = value` line of each key in VALUES given that value (None:
    dropped). A key only present as a commented-out `#key = ...` line is set there;
    other commented examples are left alone. A key in neither form is a TestError."""
    lines = text.splitlines()
    live = {}
    for i, line in enumerate(lines):
        m = re.match(r"^([a-z_]+)\s*=", line)
        if m and m.group(1) in values:
            live.setdefault(m.group(1), i)
    for k in values:
        if k in live:
            continue
        for i, line in enumerate(lines):
            if re.match(rf"^#{k}\s*=", line):
                live[k] = i
                break
    missing = set(values) - set(live)
    if missing:
        raise cs.TestError(f"the flavour's file has no key {sorted(missing)}:\n{text}")
    for k, i in live.items():
        lines[i] = f"{k} = {values[k]}" if values[k] is not None else ""
    return "\n".join(lines) + "\n"


def openssl(cwd, *args, env=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, **(env or {})))
    if r.returncode != 0:
        raise cs.TestError(f"`openssl {' '.join(args)}` failed: {r.stderr.strip()}")


class Flavour:
    """Certificates (primary, backup, intruder; intruder with both EKUs, so it can play
    either side) and the three config texts of one flavour."""

    def __init__(self, name, topo, binary, port):
        self.name = name
        self.dir = cs.run_dir(f"flavour-{name}")
        addr_b = topo.addr[topo.b]
        if name == "demo":
            self._demo(addr_b, binary, port)
        else:
            self._example(addr_b, binary, port)

    def _demo(self, addr_b, binary, port):
        tls = os.path.join(self.dir, "tls")
        script = (f". {SRC}/tests/lib/demo-setup.sh && demo_ca {tls} && "
                  f"demo_cert {tls} primary clientAuth && demo_cert {tls} backup serverAuth && "
                  f"demo_cert {tls} intruder 'serverAuth, clientAuth' && "
                  f"demo_configs {self.dir} {tls} {addr_b} {port} {binary}")
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise cs.TestError(f"demo-setup.sh failed: {r.stderr.strip()}")
        read = lambda *p: open(os.path.join(self.dir, *p)).read()  # noqa: E731
        self.primary_text, self.backup_text = read("a", "primary.conf"), read("b", "backup.conf")
        self.service = read("a", "services", "kvserver.conf")
        self.ca = os.path.join(tls, "ca.pem")
        self.cert = {n: (os.path.join(tls, f"{n}.pem"), os.path.join(tls, f"{n}.key"))
                     for n in ("primary", "backup", "intruder")}
        self.names = ("primary.demo", "backup.demo", "intruder.demo")

    def _example(self, addr_b, binary, port):
        read = lambda *p: open(os.path.join(SRC, "conf", *p)).read()  # noqa: E731
        self.primary_text, self.backup_text = read("primary.conf"), read("backup.conf")
        self.service = set_keys(read("services", "kvserver.conf"),
                                command=f"{binary} -addr 0.0.0.0:{port}", executable=binary,
                                backup=f"{addr_b}:{rp.BACKUP_PORT}", takeover_hook=None)
        d = self.dir
        with open(os.path.join(d, "cnf"), "w") as f:
            f.write("[req]\ndistinguished_name = dn\n[dn]\n[v3_ca]\nbasicConstraints = critical, CA:TRUE\n"
                    "keyUsage = critical, keyCertSign, cRLSign\n[leaf]\nbasicConstraints = CA:FALSE\n"
                    "extendedKeyUsage = ${ENV::EKU}\nsubjectAltName = DNS:${ENV::CN}\n")
        openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-config", "cnf", "-extensions", "v3_ca", "-subj", "/CN=Example CA", "-days", "1",
                "-keyout", "ca.key", "-out", "ca.pem", env={"EKU": "x", "CN": "x"})
        self.cert = {}
        for n, eku in (("primary", "clientAuth"), ("backup", "serverAuth"),
                       ("intruder", "serverAuth, clientAuth")):
            env = {"EKU": eku, "CN": f"{n}.example"}
            openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-config", "cnf", "-subj", f"/CN={n}.example", "-keyout", f"{n}.key",
                    "-out", f"{n}.csr", env=env)
            openssl(d, "x509", "-req", "-in", f"{n}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "1", "-extfile", "cnf", "-extensions", "leaf",
                    "-out", f"{n}.pem", env=env)
            os.chmod(os.path.join(d, f"{n}.key"), 0o600)
            self.cert[n] = (os.path.join(d, f"{n}.pem"), os.path.join(d, f"{n}.key"))
        self.ca = os.path.join(d, "ca.pem")
        self.names = ("primary.example", "backup.example", "intruder.example")

    def daemon_text(self, side, dep, cert, services_dir=None, state_dir=None, socket=None):
        text = self.primary_text if side == "a" else self.backup_text
        keys = dict(state_dir=state_dir or dep.state[side],
                    services_dir=services_dir or dep.path(side, "services"),
                    status_socket=socket or dep.status_socket[side], ca=self.ca, cert=cert[0], key=cert[1])
        if side == "b":
            keys["listen"] = f"{dep.topo.addr[dep.topo.b]}:{rp.BACKUP_PORT}"
        return set_keys(text, **keys)


def apply(flavour, dep, backup_cert="backup"):
    """Writes the flavour's files over DEP's: A as the primary, B with BACKUP_CERT."""
    rp.write_file(dep.primary_conf, flavour.daemon_text("a", dep, flavour.cert["primary"]))
    rp.write_file(dep.backup_conf, flavour.daemon_text("b", dep, flavour.cert[backup_cert]))
    for side in ("a", "b"):
        rp.write_file(dep.service_file[side], flavour.service)


# ---------------------------------------------------------------- a listening intruder

class CaptureServer(threading.Thread):
    """A TLS 1.3 server in B's namespace at the backup's address with the intruder's
    certificate, asking for a client certificate; counts connections and every
    application byte it is sent."""

    def __init__(self, topo, flavour):
        super().__init__(daemon=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(*flavour.cert["intruder"])
        ctx.load_verify_locations(flavour.ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.ctx = ctx
        with cs.in_netns(topo.b):
            self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((topo.addr[topo.b], rp.BACKUP_PORT))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop_flag = False
        self.connections = 0
        self.handshakes = 0
        self.received = b""
        self.errors = []

    def run(self):
        while not self.stop_flag:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(2)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    self.handshakes += 1
                    while True:
                        data = s.recv(65536)
                        if not data:
                            break
                        self.received += data
            except (ssl.SSLError, OSError) as e:
                self.errors.append(str(e))
            finally:
                conn.close()

    def stop(self):
        self.stop_flag = True
        self.join(10)
        self.sock.close()


def intruder_as_backup(r, topo, flavour, binary):
    tag = f"{flavour.name}, intruder as backup"
    dep = rp.Deployment(topo, rp.make_certs(topo.addr[topo.b]), binary, hook=False)
    apply(flavour, dep, backup_cert="intruder")
    cap = CaptureServer(topo, flavour)
    cap.start()
    primary = dep.start_primaryd()
    try:
        rp.wait_for("primaryd to try the intruder three times", lambda: cap.connections >= 3, 20)
        time.sleep(0.5)
    finally:
        cap.stop()
    cs.log(f"{tag}: {cap.connections} connections, {cap.handshakes} finished handshakes, "
           f"{len(cap.received)} bytes; errors {sorted(set(cap.errors))[:3]}")
    r.check(f"{tag}: the intruder received not one byte from primaryd (no HELLO, no image)",
            cap.received == b"", "0 bytes", f"{len(cap.received)} bytes: {cap.received[:60]!r}")
    log = primary.log_text()
    name = flavour.names[1]
    r.check(f"{tag}: primaryd's log says the backup's certificate is not {name}",
            re.search(rf"intruder\.\w+.*not '{re.escape(name)}'", log) is not None,
            f"a line naming intruder and '{name}'", log.strip()[-800:])

    # The same with a real backupd holding the intruder's certificate.
    backup = dep.start_backupd()
    time.sleep(3)
    st = backup.status()
    r.check(f"{tag}: the intruder's backupd holds no epoch", st.get("epoch") in (None, 0),
            "no epoch", st["raw"])
    files = {k: v for k, v in dep.state_files("b").items() if v}
    r.check(f"{tag}: nothing written to the intruder's state dir", not files, "no file with data", files)
    r.check(f"{tag}: primaryd never heard the intruder accept it",
            "accepted us" not in primary.log_text(), "no 'accepted us'", primary.log_tail(600))
    blog = backup.log_text()
    r.check(f"{tag}: the intruder's backupd saw no HELLO", "primary connected" not in blog,
            "no 'primary connected'", blog[-600:])
    for d in (primary, backup):
        d.kill9()
    for pid in rp.running_in(topo, topo.a, binary):
        cs.Proc(pid, "service left by a killed primaryd").kill9()


# ---------------------------------------------------------------- a connecting intruder

def raw_intruder_client(topo, flavour):
    """A TLS client in C with the intruder's certificate: sends a few bytes as a HELLO
    would be, reports what came back."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(flavour.ca)
    ctx.load_cert_chain(*flavour.cert["intruder"])
    ctx.check_hostname = False
    with cs.in_netns(topo.c):
        raw = socket.socket()
    raw.settimeout(5)
    got = b""
    try:
        raw.connect((topo.addr[topo.b], rp.BACKUP_PORT))
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"\x95\x01\x00\xa8kvserver")
            while True:
                data = s.recv(4096)
                if not data:
                    return got, "closed (EOF)"
                got += data
    except ssl.SSLError as e:
        return got, f"refused: {e.reason or e}"
    except OSError as e:
        return got, f"error: {e}"
    finally:
        raw.close()


def intruder_as_primary(r, topo, flavour, binary):
    tag = f"{flavour.name}, intruder as primary"
    dep = rp.Deployment(topo, rp.make_certs(topo.addr[topo.b]), binary, hook=False)
    apply(flavour, dep)
    backup = dep.start_backupd()
    primary = dep.start_primaryd()
    service = rp.service_proc(primary, binary)
    a_client = dep.client_to(topo.a)
    a_state = cs.wait_serving(a_client, service)
    rp.wait_acked(primary, backup, at_least=1)
    for i in range(20):
        a_client.json("/set", {"k": f"real{i}", "v": f"from-A-{i}"})

    # The intruder's primaryd in C: its own files, its own kvserver.
    idir = cs.run_dir(f"intruder-{flavour.name}")
    os.makedirs(os.path.join(idir, "services"))
    os.makedirs(os.path.join(idir, "state"))
    iconf = os.path.join(idir, "primary.conf")
    rp.write_file(iconf, flavour.daemon_text("a", dep, flavour.cert["intruder"],
                                             services_dir=os.path.join(idir, "services"),
                                             state_dir=os.path.join(idir, "state"),
                                             socket=f"{topo.sockdir}/intruder.sock"))
    # Its own kvserver in C, which it attaches to (a primaryd that is to start its
    # service asks the backup first, and this one never gets an answer).
    iwork = cs.start_workload(binary, port=rp.PORT, host=topo.addr[topo.c], listen=f"0.0.0.0:{rp.PORT}",
                              netns=topo.c)
    pid_file = os.path.join(idir, "kvserver.pid")
    with open(pid_file, "w") as f:
        f.write(f"{iwork.proc.pid}\n")
    isvc = re.sub(r"(?m)^command = .*$", f"pid_file = {pid_file}", flavour.service)
    rp.write_file(os.path.join(idir, "services", "kvserver.conf"), isvc)
    log_from = len(backup.log_text())  # refusals are logged once per address and reason per 10 s
    intruder = rp.start_daemon("primaryd", cs.primaryd(), iconf, topo.c, idir, topo.sockdir,
                               name="intruder-primaryd")
    i_client = dep.client_to(topo.c)
    i_state = i_client.state()
    for i in range(20):
        i_client.json("/set", {"k": f"intruder{i}", "v": "stolen"})

    acked0 = primary.field("acked")
    got, how = raw_intruder_client(topo, flavour)
    r.check(f"{tag}: a raw TLS client with the intruder's certificate receives no byte",
            got == b"", "0 bytes", f"{len(got)} bytes {got[:40]!r} ({how})")
    time.sleep(3)  # the intruder primaryd retries meanwhile
    acked1 = primary.field("acked")
    cs.log(f"{tag}: A's acknowledged epoch {acked0} -> {acked1} while the intruder tried; raw client: {how}")
    r.check(f"{tag}: the real primary's epochs kept being acknowledged",
            isinstance(acked1, int) and isinstance(acked0, int) and acked1 >= acked0 + 10,
            f"> {acked0} + 10 in 3 s", acked1)
    blog = backup.log_text()[log_from:]
    c_ip = topo.addr[topo.c]
    refused = [l for l in blog.splitlines() if c_ip in l and "intruder" in l and "refused" in l]
    r.check(f"{tag}: backupd's log names C and the intruder's certificate as refused",
            bool(refused), f"a 'refused connection from {c_ip}' line naming intruder", blog[-800:])
    r.check(f"{tag}: no connection replaced A's, and none from C got to HELLO",
            "replaces" not in blog and not re.search(rf"primary connected from {re.escape(c_ip)}", blog),
            "neither", blog[-800:])
    r.check(f"{tag}: the intruder's primaryd never heard the backup accept it",
            "accepted us" not in intruder.log_text(), "no 'accepted us'", intruder.log_tail(600))

    # Host A dies; the intruder keeps trying.
    t_kill = rp.kill_now(service, primary.proc)
    fo_s = int(re.search(r"failover_timeout_ms\s*=\s*(\d+)", flavour.service).group(1)) \
        if "failover_timeout_ms" in flavour.service else 1000
    fo_s /= 1000
    b_client = dep.client_to(topo.b)
    st = rp.wait_for("B to serve kvserver", lambda: b_client.state(timeout=0.5), fo_s + 30, 0.05)
    took = time.monotonic() - t_kill
    cs.log(f"{tag}: B serves {took * 1000:.0f} ms after A died (failover_timeout {fo_s:g} s)")
    r.check(f"{tag}: B took over on schedule", took < fo_s + TAKEOVER_SLACK_S,
            f"< {fo_s + TAKEOVER_SLACK_S:g} s", f"{took:.2f} s")
    r.check(f"{tag}: B restored A's process (its instance id), not the intruder's",
            st["instance"] == a_state["instance"] and st["instance"] != i_state["instance"],
            a_state["instance"], f"{st['instance']} (intruder's {i_state['instance']})")
    items = b_client.json("/items", timeout=30)
    flat = items if isinstance(items, dict) else {}
    real_ok = all(flat.get(f"real{i}") == f"from-A-{i}" for i in range(20))
    stolen = [k for k in flat if k.startswith("intruder")]
    r.check(f"{tag}: B holds A's 20 keys and none of the intruder's", real_ok and not stolen,
            "real0..19 from A, no intruder*", f"real ok {real_ok}, intruder keys {stolen[:5]}")
    intruder.kill9()
    backup.kill9()
    for host in (topo.b, topo.c):
        for pid in rp.running_in(topo, host, binary):
            cs.Proc(pid, "kvserver left by the test").kill9()


def main(r, *flavours):
    binary = cs.build_workload("kvserver", "cgo")
    for name in flavours or ("example", "demo"):
        if name not in ("example", "demo"):
            raise cs.TestError(f"unknown flavour {name}; expected example or demo")
        cs.log(f"--- {name}")
        for scenario in (intruder_as_backup, intruder_as_primary):
            with rp.Topology() as topo:
                flavour = Flavour(name, topo, binary, rp.PORT)
                try:
                    scenario(r, topo, flavour, binary)
                except cs.TestError as e:
                    r.fail(f"{name}, {scenario.__name__}: {e}")


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
