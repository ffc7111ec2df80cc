"""Replication test kit: three hosts and a switch, certificates, daemon configs,
the two daemons, their status, and the checks failover tests share.

Built on checksync.py (processes, namespaces, HTTP clients, cleanup); a test
imports both. Everything here is recorded for checksync's cleanup, so a test
that fails half-way leaves no process, namespace or file behind.

Topology (one per scenario or round; see Topology):

        A (primary)          B (backup)          C (client)
        eth0 .1 + VIP .100   eth0 .2              eth0 .3
          |                    |                    |
        port-a ------------ br0 (in SW) ---------- port-c
                               |
                             port-b

All addresses are 10.213.N.x/24 and exist only inside the namespaces. The
service address (VIP, 10.213.N.100) starts on A's eth0; the takeover hook the
test writes moves it to B's eth0. Faults are made in the switch namespace:
cut() brings A's port down, unplug() takes it out of the bridge, and
isolate() sets bridge port isolation, which parts A from B while C still
reaches both (isolated ports talk only to non-isolated ones).

Daemon status: the daemons' `status` output format is theirs to choose, so
parse_status() reads it loosely (JSON, a table, or "key: value"/"key value"
text) into role, epoch, acked, lag, pause_p50_ms, pause_p99_ms,
bytes_per_epoch, heartbeat_ms and pid. A field it cannot find is missing
from the result, and Daemon.field() then fails with the raw output, so a
format it does not understand shows up as exactly that.
"""

import collections
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import checksync as cs

SERVICE = "kvserver"
PORT = 8080            # the service's port (fresh namespaces: every port is free)
BACKUP_PORT = 7000     # where backupd listens
DEV = "eth0"           # each host's interface
TIMING = {             # service file defaults for the tests (the example config's values)
    "epoch_interval_ms": 100,
    "heartbeat_interval_ms": 50,
    "failover_timeout_ms": 1000,
    "lease_ms": 500,
    "dirty_tracking": "uffd",
}


# ---------------------------------------------------------------- waiting

def wait_for(what, fn, timeout, interval=0.05):
    """Calls FN until it returns something true (returned) or TIMEOUT seconds pass;
    then raises TestError saying WHAT was expected and the last value or error seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = repr(value)
        except cs.TestError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise cs.TestError(f"expected {what} within {timeout:g}s; last seen: {last}")
        time.sleep(interval)


# ---------------------------------------------------------------- topology

class Topology:
    """Hosts A, B, C and the switch SW as network namespaces cs-{a,b,c,sw}-<rand>.

    Each host's eth0 is one end of a veth pair whose other end, port-{a,b,c},
    is a port of bridge br0 in SW. Created inside SW with the peer placed
    straight into the host, so no interface ever exists in the host's own
    namespace. close() kills whatever still runs in the four namespaces and
    deletes them; it is safe to call twice. Use as a context manager.
    """

    def __init__(self, net=None):
        suffix = secrets.token_hex(3)
        self.sw, self.a, self.b, self.c = (f"{cs.NETNS_PREFIX}-{h}-{suffix}" for h in ("sw", "a", "b", "c"))
        self.net = net or random.randint(1, 254)
        self.addr = {self.a: f"10.213.{self.net}.1", self.b: f"10.213.{self.net}.2",
                     self.c: f"10.213.{self.net}.3"}
        self.vip = f"10.213.{self.net}.100"
        self.port = {self.a: "port-a", self.b: "port-b", self.c: "port-c"}
        self._created = []
        self.sockdir = None  # unix sockets of this topology's daemons: short paths (108-byte limit)

    def __enter__(self):
        cs._hosts.append(self)  # checksync's cleanup closes us too, even on SIGTERM
        self.sockdir = tempfile.mkdtemp(prefix="cs-sock-", dir="/tmp")
        # One `ip -batch` per namespace (five commands, not 23: a test makes a topology per round).
        names = (self.sw, self.a, self.b, self.c)
        try:
            try:
                _ip_batch(None, [f"netns add {ns}" for ns in names])
            finally:
                made = cs.netns_list()
                self._created += [ns for ns in names if ns in made]
            sw = ["link set lo up", "link add br0 type bridge", "link set br0 up"]  # STP off: forwards at once
            for host in (self.a, self.b, self.c):
                sw += [f"link add {self.port[host]} type veth peer name {DEV} netns {host}",
                       f"link set {self.port[host]} master br0 up"]
            _ip_batch(self.sw, sw)
            for host in (self.a, self.b, self.c):
                _ip_batch(host, ["link set lo up", f"addr add {self.addr[host]}/24 dev {DEV}",
                                 f"link set {DEV} up"] + ([f"addr add {self.vip}/24 dev {DEV}"]
                                                          if host == self.a else []))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        problems = self.close()
        if problems and exc_type is None:
            raise cs.TestError("; ".join(problems))
        for problem in problems:
            cs.log(problem)

    def close(self):
        problems = cs.Hosts.close(self)  # same job: kill what runs inside, delete the namespaces
        if self.sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)
            self.sockdir = None
        return problems

    def __str__(self):
        return (f"A {self.a} ({self.addr[self.a]}, VIP {self.vip}), B {self.b} ({self.addr[self.b]}), "
                f"C {self.c} ({self.addr[self.c]}), switch {self.sw}")

    # -- faults, all made in the switch

    def cut(self, host):
        """Brings HOST's switch port down: its link is dead (carrier lost on its eth0)."""
        cs._ip("-n", self.sw, "link", "set", self.port[host], "down")

    def heal(self, host):
        cs._ip("-n", self.sw, "link", "set", self.port[host], "up")

    def unplug(self, host):
        """Moves HOST's veth out of the bridge (link stays up, nothing is forwarded)."""
        cs._ip("-n", self.sw, "link", "set", self.port[host], "nomaster")

    def plug(self, host):
        cs._ip("-n", self.sw, "link", "set", self.port[host], "master", "br0")

    def isolate(self, *hosts):
        """Bridge port isolation on HOSTS' ports: isolated ports cannot reach one another,
        but still reach the others (isolate(A, B) parts A and B; C reaches both)."""
        for h in hosts:
            _bridge("-n", self.sw, "link", "set", "dev", self.port[h], "isolated", "on")

    def unisolate(self, *hosts):
        for h in hosts:
            _bridge("-n", self.sw, "link", "set", "dev", self.port[h], "isolated", "off")

    # -- looking

    def vip_holders(self):
        """The hosts whose eth0 holds the VIP."""
        return [h for h in (self.a, self.b) if self.vip in cs._ip("-n", h, "-4", "addr", "show", "dev", DEV)]

    def mac(self, host):
        """The MAC address of HOST's eth0."""
        out = cs._ip("-n", host, "-o", "link", "show", "dev", DEV)
        m = re.search(r"link/ether ([0-9a-f:]{17})", out)
        if not m:
            raise cs.TestError(f"no MAC address for {DEV} in {host}: {out.strip()}")
        return m.group(1)

    def in_netns(self, pid, host):
        """True if process PID lives in HOST's network namespace."""
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{host}").st_ino
        except OSError:
            return False


def _ip_batch(netns, commands):
    """Runs COMMANDS (ip's own syntax, one a line) in one `ip [-n NETNS] -batch -`; it stops at
    the first that fails, and the error names that one."""
    args = (["-n", netns] if netns else []) + ["-batch", "-"]
    r = subprocess.run(["ip", *args], input="\n".join(commands) + "\n", capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        m = re.search(r"Command failed -:(\d+)", r.stderr)
        what = commands[int(m.group(1)) - 1] if m and 0 < int(m.group(1)) <= len(commands) else "; ".join(commands)
        raise cs.TestError(f"`ip {' '.join(args[:-2])} {what}` failed: {r.stderr.strip()}")


def _bridge(*args):
    r = subprocess.run(["bridge", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise cs.TestError(f"`bridge {' '.join(args)}` failed: {r.stderr.strip()}")


def reachable(from_ns, ip, port=9, timeout=0.5):
    """'reachable' if a TCP connect from FROM_NS to IP:PORT is answered (accepted or
    refused), 'unreachable' if it times out or has no route. No listener needed: a
    refused connect proves the path works."""
    with cs.in_netns(from_ns):
        s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return "reachable"
    except ConnectionRefusedError:
        return "reachable"
    except OSError:
        return "unreachable"
    finally:
        s.close()


# ---------------------------------------------------------------- certificates

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = ${ENV::EKU}
subjectAltName = ${ENV::SAN}
subjectKeyIdentifier = hash
"""

Certs = collections.namedtuple("Certs", "dir ca primary backup other_ca other self_signed intruder")
# each of primary, backup, other, self_signed, intruder is a (cert, key) pair of paths


_certs_made = {}  # backup IP -> Certs: one test's rounds on one subnet share them (make_certs)


def make_certs(backup_ip):
    """Certificates for one test run, made with the openssl command (as tests/unit/test_tls.c):

      ca            our CA ("CheckSync test CA")
      primary       CN primary.test, signed by ca, EKU clientAuth (it connects)
      backup        CN backup.test, SAN DNS:backup.test and IP:BACKUP_IP, signed by ca,
                    EKU serverAuth (it listens)
      other_ca      another CA; other: CN primary.test signed by it
      self_signed   CN primary.test, signed by itself
      intruder      CN intruder.test, signed by ca (right CA, wrong name), both EKUs
    The others carry both EKUs, so that only what each case is about is wrong.
    Made once per BACKUP_IP in a test process (about 20 openssl commands: seconds on a
    loaded machine, and a test's rounds each asked again); no test changes them.
    """
    if backup_ip not in _certs_made:
        _certs_made[backup_ip] = _make_certs(backup_ip)
    return _certs_made[backup_ip]


def _make_certs(backup_ip):
    d = cs.run_dir("certs")
    with open(os.path.join(d, "cnf"), "w") as f:
        f.write(_OPENSSL_CNF)

    def openssl(*args, san="DNS:x", eku="serverAuth, clientAuth"):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, SAN=san, EKU=eku))
        if r.returncode != 0:
            raise cs.TestError(f"`openssl {' '.join(args)}` failed: {r.stderr.strip()}")

    def key(name):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")

    def ca(name, cn):
        key(name)
        openssl("req", "-new", "-x509", "-config", "cnf", "-extensions", "v3_ca", "-key", f"{name}.key",
                "-subj", f"/CN={cn}", "-days", "2", "-out", f"{name}.crt")

    def leaf(name, cn, issuer, san, eku="serverAuth, clientAuth"):
        key(name)
        openssl("req", "-new", "-config", "cnf", "-key", f"{name}.key", "-subj", f"/CN={cn}",
                "-out", f"{name}.csr", san=san, eku=eku)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.crt", "-CAkey", f"{issuer}.key",
                "-CAcreateserial", "-days", "2", "-extfile", "cnf", "-extensions", "v3_leaf",
                "-out", f"{name}.crt", san=san, eku=eku)
        os.chmod(os.path.join(d, f"{name}.key"), 0o600)

    ca("ca", "CheckSync test CA")
    ca("other_ca", "Another CA")
    leaf("primary", "primary.test", "ca", "DNS:primary.test", eku="clientAuth")
    leaf("backup", "backup.test", "ca", f"DNS:backup.test, IP:{backup_ip}", eku="serverAuth")
    leaf("other", "primary.test", "other_ca", "DNS:primary.test")
    leaf("intruder", "intruder.test", "ca", "DNS:intruder.test")
    key("self_signed")
    openssl("req", "-new", "-x509", "-config", "cnf", "-extensions", "v3_leaf", "-key", "self_signed.key",
            "-subj", "/CN=primary.test", "-days", "2", "-out", "self_signed.crt", san="DNS:primary.test")

    def pair(name):
        return (os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))

    return Certs(d, os.path.join(d, "ca.crt"), pair("primary"), pair("backup"),
                 os.path.join(d, "other_ca.crt"), pair("other"), pair("self_signed"), pair("intruder"))


def cert_subject(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-subject", "-issuer", "-ext",
                        "subjectAltName"], capture_output=True, text=True, timeout=30)
    return " ".join(r.stdout.split())


def cert_verifies(ca, cert):
    r = subprocess.run(["openssl", "verify", "-CAfile", ca, cert], capture_output=True, text=True,
                       timeout=30)
    return r.returncode == 0


# ---------------------------------------------------------------- takeover hook

_HOOK = """\
#!/bin/sh
# Takeover hook written by the test. Runs in host B (backupd's namespace):
# records its environment, puts the service address on B, points the client's
# neighbour entry for it at B's MAC (what a gratuitous ARP would do), takes
# the address from A, and flushes the client's neighbour cache. In this order
# no packet of the client's can go to A's MAC once A has lost the address (it
# would be dropped, and the client's TCP would wait 1 s to send its SYN again).
PATH=/usr/sbin:/usr/bin:/sbin:/bin  # a hook may get no PATH at all
export PATH
out="${{1:-$(dirname "$0")/takeover.env}}"
{{
  echo "--- run"
  echo "CHECKSYNC_SERVICE=${{CHECKSYNC_SERVICE-<unset>}}"
  echo "CHECKSYNC_PID=${{CHECKSYNC_PID-<unset>}}"
  echo "CHECKSYNC_EPOCH=${{CHECKSYNC_EPOCH-<unset>}}"
  echo "NETNS=$(readlink /proc/self/ns/net)"
  echo "START=$(date +%s.%N)"
}} >>"$out"
{ip} addr replace {vip}/24 dev {dev} || exit 1
{ip} -n {c} neigh replace {vip} lladdr {mac_b} dev {dev} nud reachable
{ip} -n {a} addr del {vip}/24 dev {dev} 2>/dev/null
{ip} -n {c} neigh flush all
echo "DONE=$(date +%s.%N)" >>"$out"
"""

_FENCE = """\
#!/bin/sh
# Fence hook written by the test: exits with the number in fence.rc (the test sets
# it: 1 = fencing fails) and records each run, with that number, in fence.log beside
# itself. The time is taken after fence.rc is read, so a run logged as succeeding
# began no earlier than the moment the test let it succeed.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
d=$(dirname "$0")
rc=$(cat "$d/fence.rc")
echo "FENCE=$(date +%s.%N) SERVICE=${CHECKSYNC_SERVICE-<unset>} RC=$rc" >>"$d/fence.log"
exit "$rc"
"""


def write_fence(directory, rc):
    """Writes the fence hook script, failing (exit 1) or succeeding (0) as RC says; its path."""
    path = os.path.join(directory, "fence.sh")
    with open(path, "w") as f:
        f.write(_FENCE)
    os.chmod(path, 0o755)
    set_fence_rc(directory, rc)
    return path


def set_fence_rc(directory, rc):
    write_file(os.path.join(directory, "fence.rc"), f"{rc}\n")


def fence_runs(directory):
    """[(time.time() of the run, CHECKSYNC_SERVICE, exit code)] of the fence hook's runs."""
    try:
        with open(os.path.join(directory, "fence.log")) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    runs = []
    for line in lines:
        m = re.match(r"FENCE=([\d.]+) SERVICE=(\S+) RC=(\d+)", line)
        if m:
            runs.append((float(m.group(1)), m.group(2), int(m.group(3))))
    return runs


def write_hook(directory, topo):
    """Writes the takeover hook script; returns (its path, the file it records runs in)."""
    path = os.path.join(directory, "takeover.sh")
    with open(path, "w") as f:
        f.write(_HOOK.format(ip=shutil.which("ip") or "/usr/sbin/ip", a=topo.a, c=topo.c,
                             vip=topo.vip, dev=DEV, mac_b=topo.mac(topo.b)))
    os.chmod(path, 0o755)
    return path, os.path.join(directory, "takeover.env")


def hook_runs(env_file):
    """The takeover hook's recorded runs, oldest first: a list of {KEY: value}."""
    try:
        with open(env_file) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    runs = []
    for block in text.split("--- run\n")[1:]:
        runs.append(dict(line.split("=", 1) for line in block.splitlines() if "=" in line))
    return runs


# ---------------------------------------------------------------- daemons

class Notify:
    """A NOTIFY_SOCKET (unix datagram socket in a run dir) and what was sent to it."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, text)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while True:  # until its socket file goes with its topology
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if not os.path.exists(self.path):  # its topology is gone
                    self.sock.close()
                    return
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def assignments(self):
        return [line for _, m in self.messages for line in m.splitlines()]

    def saw(self, prefix):
        return [a for a in self.assignments() if a.startswith(prefix)]


class Daemon:
    """One running checksync-primaryd or checksync-backupd: its process, log and notify socket."""

    def __init__(self, kind, binary, config, netns, log, notify, proc, socket_path=None):
        self.kind, self.binary, self.config, self.netns = kind, binary, config, netns
        self.log, self.notify, self.proc = log, notify, proc
        self.socket = socket_path  # its status_socket

    def __str__(self):
        return f"{self.kind} (pid {self.proc.pid}, netns {self.netns})"

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.alive()

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=2000):
        return self.log_text()[-n:]

    def status_raw(self):
        """`DAEMON status --config F` run in the daemon's namespace: an EngineRun."""
        return cs.run_engine([self.binary, "status", "--config", self.config], self.netns, timeout=15)

    def status(self, service=SERVICE):
        """This service's fields from `status` (see parse_status); raises TestError if
        status fails. The raw text is under 'raw'."""
        r = self.status_raw()
        if r.rc != 0:
            raise cs.TestError(f"`{' '.join(r.argv[-4:])}` exited {r.rc}: "
                               f"{(r.stderr or r.stdout).strip() or '(no output)'}")
        fields = parse_status(r.stdout, service)
        fields["raw"] = r.stdout.strip()
        return fields

    def field(self, key, service=SERVICE):
        """One field of status; raises TestError, with the raw output, if it is not there."""
        st = self.status(service)
        if key not in st:
            raise cs.TestError(f"{self.kind} status: could not read '{key}' for {service} from "
                               f"its output:\n{st['raw']}")
        return st[key]

    def status_precise(self, service=SERVICE):
        """Like status(), but read from the status socket's rows (common/status.h), which
        carry full precision (the status command prints durations in whole ms)."""
        rows = status_socket_rows(self.socket)
        text = []
        for svc, role, name, unit, value in rows:
            if svc != service:
                continue
            if not text:
                text.append(f"role {role}")
            label = name.replace("_", " ")
            if value is None:
                text.append(f"{label} -")
            elif unit == "text":
                text.append(f"{label} {value}")
            elif unit == "seconds":
                text.append(f"{label} {value * 1000:.6f} ms")
            elif unit == "bytes":
                text.append(f"{label} {value:.0f} B")
            else:
                text.append(f"{label} {value:.17g}")
        fields = parse_status("\n".join(text), service)
        fields["raw"] = "\n".join(text)
        return fields

    def kill9(self):
        self.proc.kill9()


def start_daemon(kind, binary, config, netns, rundir, sockdir, name=None, socket_path=None):
    """Starts BINARY --config CONFIG in NETNS with NOTIFY_SOCKET (in SOCKDIR) set, output to
    a log file in RUNDIR."""
    name = name or kind
    log = os.path.join(rundir, f"{name}.log")
    sock = os.path.join(sockdir, f"{name}-{secrets.token_hex(3)}.notify")
    notify = Notify(sock)
    env = dict(os.environ, NOTIFY_SOCKET=sock)
    with open(log, "ab") as logf:
        popen = subprocess.Popen(cs.netns_prefix(netns) + [binary, "--config", config], env=env,
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    proc = cs.Proc(popen.pid, f"{name} started by the test", popen, log)  # ip netns exec execs in place
    return Daemon(kind, binary, config, netns, log, notify, proc, socket_path)


def status_socket_rows(path, timeout=5):
    """[(service, role, name, unit, value or None)] from a daemon's status socket: a
    version line "checksync-status 1", then SERVICE<TAB>ROLE<TAB>NAME<TAB>UNIT<TAB>VALUE."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    chunks = []
    try:
        s.connect(path)
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    except OSError as e:
        raise cs.TestError(f"status socket {path}: {e}")
    finally:
        s.close()
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    if not lines or lines[0] != "checksync-status 1":
        raise cs.TestError(f"status socket {path}: expected 'checksync-status 1' first, saw {lines[:2]}")
    rows = []
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) == 5:  # unit "text": the value is words (status_report_text)
            value = None if f[4] == "-" else f[4] if f[3] == "text" else float(f[4])
            rows.append((f[0], f[1], f[2], f[3], value))
    return rows


class Deployment:
    """Config files for one protected kvserver: A runs primaryd, B runs backupd.

    Layout under a fresh run dir: a/primary.conf, a/services/kvserver.conf,
    a/state/, b/backup.conf, b/services/kvserver.conf, b/state/, the hook
    script and the file it records into (and, with FENCE_RC, the fence hook:
    see write_fence). SERVICE_KEYS override TIMING and add
    keys to the service file (the same file on both hosts, as the example
    config allows); EXTRA_ARGS go after `-addr 0.0.0.0:PORT` in the command.
    """

    def __init__(self, topo, certs, binary, port=PORT, extra_args=(), hook=True, fence_rc=None,
                 **service_keys):
        self.topo, self.certs, self.binary, self.port = topo, certs, binary, port
        self.dir = cs.run_dir("deploy")
        if fence_rc is not None:  # a fence hook, failing (1) or succeeding (0) to begin with
            service_keys["fence_hook"] = write_fence(self.dir, fence_rc)
        self.id = secrets.token_hex(3)
        self.status_socket = {"a": f"{topo.sockdir}/{self.id}-primary.sock",
                              "b": f"{topo.sockdir}/{self.id}-backup.sock"}
        self.hook, self.hook_env = write_hook(self.dir, topo) if hook else (None, None)
        self.service = dict(TIMING, **service_keys)
        self.command = " ".join([binary, "-addr", f"0.0.0.0:{port}", *extra_args])
        for side in ("a", "b"):
            os.makedirs(os.path.join(self.dir, side, "services"))
            os.makedirs(os.path.join(self.dir, side, "state"))
        self.primary_conf = os.path.join(self.dir, "a", "primary.conf")
        self.backup_conf = os.path.join(self.dir, "b", "backup.conf")
        self.service_file = {side: os.path.join(self.dir, side, "services", f"{SERVICE}.conf")
                             for side in ("a", "b")}
        self.state = {side: os.path.join(self.dir, side, "state") for side in ("a", "b")}
        self.write_primary_conf()
        self.write_backup_conf()
        for side in ("a", "b"):
            self.write_service(side)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def write_primary_conf(self, cert=None, extra=""):
        cert, key = cert or self.certs.primary
        write_file(self.primary_conf, f"""\
# written by the test
[daemon]
state_dir = {self.state['a']}
services_dir = {self.path('a', 'services')}
status_socket = {self.status_socket['a']}
{extra}
[tls]
ca = {self.certs.ca}
cert = {cert}
key = {key}
""")

    def write_backup_conf(self, cert=None, extra=""):
        cert, key = cert or self.certs.backup
        write_file(self.backup_conf, f"""\
# written by the test
[daemon]
listen = {self.topo.addr[self.topo.b]}:{BACKUP_PORT}
state_dir = {self.state['b']}
services_dir = {self.path('b', 'services')}
status_socket = {self.status_socket['b']}
{extra}
[tls]
ca = {self.certs.ca}
cert = {cert}
key = {key}
""")

    def service_text(self, **override):
        keys = {"name": SERVICE, "command": self.command, "executable": self.binary,
                "backup": f"{self.topo.addr[self.topo.b]}:{BACKUP_PORT}", "primary": "primary.test",
                "backup_name": "backup.test"}
        keys.update(self.service)
        if self.hook:
            keys["takeover_hook"] = self.hook  # records into takeover.env beside itself
        keys.update(override)
        lines = ["# written by the test", "[service]"]
        lines += [f"{k} = {v}" for k, v in keys.items() if v is not None]
        return "\n".join(lines) + "\n"

    def write_service(self, side, **override):
        write_file(self.service_file[side], self.service_text(**override))

    def start_backupd(self, wait=True):
        d = start_daemon("backupd", cs.backupd(), self.backup_conf, self.topo.b, self.path("b"),
                         self.topo.sockdir, socket_path=self.status_socket["b"])
        if wait:
            wait_status(d)
        return d

    def start_primaryd(self, wait=True):
        d = start_daemon("primaryd", cs.primaryd(), self.primary_conf, self.topo.a, self.path("a"),
                         self.topo.sockdir, socket_path=self.status_socket["a"])
        if wait:
            wait_status(d)
        return d

    def vip_client(self):
        """A client in C for the service address."""
        return cs.Client(self.topo.vip, self.port, netns=self.topo.c)

    def client_to(self, host, from_ns=None):
        """A client (in C unless FROM_NS) for HOST's own address."""
        return cs.Client(self.topo.addr[host], self.port, netns=from_ns or self.topo.c)

    def state_files(self, side="b"):
        """{relative path: size} of the files under SIDE's state dir."""
        root = self.state[side]
        out = {}
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                try:
                    out[os.path.relpath(p, root)] = os.path.getsize(p)
                except OSError:
                    pass
        return out


MAX_LINE = 190  # the daemons' config lines hold at most ~200 characters (inih)


def write_file(path, text):
    long = [l for l in text.splitlines() if len(l) > MAX_LINE]
    if long:
        raise cs.TestError(f"{path}: the test would write a line of {len(long[0])} characters, more "
                           f"than a config line holds: {long[0]!r}")
    with open(path, "w") as f:
        f.write(text)


def wait_status(daemon, timeout=15):
    """Waits until DAEMON's status command answers; fails early, with its log, if it exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise cs.TestError(f"{daemon} exited (status {daemon.proc.popen.poll()}) before its status "
                               f"command answered; its log:\n{daemon.log_tail()}")
        r = daemon.status_raw()
        if r.rc == 0:
            return r.stdout
        last = (r.stderr or r.stdout).strip()
        time.sleep(0.05)
    raise cs.TestError(f"expected `{daemon.kind} status` to answer within {timeout}s; last: {last!r}; "
                       f"its log:\n{daemon.log_tail()}")


def wait_acked(primary, backup, at_least=1, timeout=30):
    """Waits until the primary reports epoch AT_LEAST acknowledged and the backup holds
    at least that epoch; returns (primary's acked, backup's epoch)."""
    def both():
        p = primary.status()
        b = backup.status()
        if not primary.alive() or not backup.alive():
            raise cs.TestError(f"a daemon exited: primaryd alive {primary.alive()}, backupd alive "
                               f"{backup.alive()}")
        pa, be = p.get("acked"), b.get("epoch")
        if pa is not None and be is not None and pa >= at_least and be >= at_least:
            return (pa, be)
        raise cs.TestError(f"primaryd status (acked {pa}):\n{p['raw']}\nbackupd status (epoch {be}):\n{b['raw']}")
    try:
        return wait_for(f"epoch >= {at_least} acked by the primary and held by the backup", both, timeout)
    except cs.TestError as e:
        raise cs.TestError(f"{e}\nprimaryd log:\n{primary.log_tail()}\nbackupd log:\n{backup.log_tail()}")


# ---------------------------------------------------------------- processes

def children_running(parent_pid, binary):
    """Pids of live children of PARENT_PID whose executable is BINARY."""
    out = []
    for pid in cs.processes_running(binary):
        try:
            with open(f"/proc/{pid}/status") as f:
                ppid = next(int(l.split()[1]) for l in f if l.startswith("PPid:"))
        except (OSError, StopIteration, ValueError):
            continue
        if ppid == parent_pid:
            out.append(pid)
    return out


def service_proc(primary, binary, timeout=20):
    """The service primaryd started (its child running BINARY), as a cs.Proc."""
    pids = wait_for(f"a child of {primary} running {binary}",
                    lambda: children_running(primary.pid, binary) if primary.alive()
                    else _raise(f"{primary} exited; its log:\n{primary.log_tail()}"), timeout)
    if len(pids) != 1:
        raise cs.TestError(f"expected one service process under {primary}, saw {pids}")
    return cs.Proc(pids[0], "service started by primaryd")


def running_in(topo, host, binary):
    """Pids running BINARY in HOST's namespace."""
    return [p for p in cs.processes_running(binary) if topo.in_netns(p, host)]


def _raise(message):
    raise cs.TestError(message)


# ---------------------------------------------------------------- status parsing

_NUM = (r"(?P<n>none|never|n/a|-|\d+(?:\.\d+)?)\s*"
        r"(?P<u>ns|us|µs|usec|ms|msec|sec|s|KiB|MiB|GiB|kB|KB|MB|GB|B|bytes)?(?![\w])")
_DUR = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "usec": 1e-3, "ms": 1.0, "msec": 1.0, "s": 1000.0,
        "sec": 1000.0}
_SIZE = {"b": 1, "bytes": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 1 << 20, "gb": 10**9,
         "gib": 1 << 30}
_SEP = r"[\s:=]*"
# (field, kind, patterns), tried in this order; a match's text is blanked before the next
# field is looked for, so "last acked epoch 4" is not read again as "epoch 4".
_FIELDS = [
    ("pause_p50_ms", "dur", [r"p50\s*/\s*p99(?P<lu>[\s_]*\(?(?:us|ms)\)?)?" + _SEP + _NUM + r"\s*/\s*\d",
                             r"pause[\w\s]*?p50(?P<lu>[\s_]*\(?(?:us|ms)\)?)?" + _SEP + _NUM]),
    ("pause_p99_ms", "dur", [r"p50\s*/\s*p99(?:[\s_]*\(?(?P<lu>us|ms)\)?)?" + _SEP + r"[\d.]+\s*(?:[a-zµ]+)?\s*/\s*" + _NUM,
                             r"p99(?P<lu>[\s_]*\(?(?:us|ms)\)?)?" + _SEP + _NUM]),
    ("bytes_per_epoch", "size", [r"bytes[\s_]*(?:per|/)[\s_]*epoch" + _SEP + _NUM,
                                 r"epoch[\s_]*(?:mean|avg|average)(?:[\s_]*bytes)?" + _SEP + _NUM,
                                 r"bytes[\s_]*(?:mean|avg|average)" + _SEP + _NUM,
                                 r"bytes[\s_]*last" + _SEP + _NUM,
                                 r"epoch[\s_]*(?:last|size)(?:[\s_]*bytes)?" + _SEP + _NUM,
                                 _NUM + r"\s*(?:per|/)\s*epoch"]),
    ("durable", "int", [r"durable(?:[\s_-]*epoch)?" + _SEP + _NUM]),
    ("acked", "int", [r"(?:last[\s_-]*)?(?:acked|acknowledged|ack)(?:[\s_-]*epoch)?" + _SEP + _NUM]),
    ("epoch", "int", [r"(?<![\w/-])(?:current[\s_-]*|committed[\s_-]*|last[\s_-]*)?epoch(?![\w/-])" + _SEP + _NUM]),
    ("lag", "num", [r"\blag(?:[\s_]*\(?(?P<lu>ms|epochs?)\)?)?" + _SEP + _NUM]),
    ("heartbeat_ms", "dur", [r"heartbeat[\w\s]*?(?P<lu>_ms|_us|\(ms\))?" + _SEP + _NUM,
                             r"(?:last[\s_-]*)?heard" + _SEP + _NUM]),
    ("pid", "int", [r"\bpid" + _SEP + _NUM]),
]
_ROLES = ("serving", "backup", "primary", "frozen", "standby")


def parse_status(text, service=SERVICE):
    """The fields of SERVICE in a daemon's status output (see the module comment).

    A field found with a value such as 'none' or '-' is present and None.
    Durations are in ms, sizes in bytes, epochs and pids integers."""
    text = _as_kv_text(text, service)
    fields = {}
    m = re.search(r"\b(?:role|state)" + _SEP + r"(\w+)", text, re.I)
    if m:
        fields["role"] = m.group(1).lower()
    else:
        words = re.findall(r"\b(" + "|".join(_ROLES) + r")\b", text, re.I)
        if words:
            fields["role"] = words[0].lower()
    for name, kind, patterns in _FIELDS:
        for pat in patterns:
            m = re.search(pat, text, re.I)
            if m:
                fields[name] = _value(m, kind)
                if name != "pause_p50_ms":  # p50/p99 share one match
                    text = text[:m.start()] + " " * (m.end() - m.start()) + text[m.end():]
                break
    return fields


def _value(m, kind):
    n = m.group("n").lower()
    if n in ("none", "never", "n/a", "-"):
        return None
    x = float(n)
    unit = (m.group("u") or "").strip()
    label_unit = ""
    if "lu" in m.re.groupindex and m.group("lu"):
        label_unit = re.sub(r"[^a-z]", "", m.group("lu").lower())
    if kind == "int":
        return int(x)
    if kind == "dur":
        u = unit or label_unit or "ms"
        return x * _DUR.get(u, _DUR.get(u.lower(), 1.0))
    if kind == "size":
        return x * _SIZE.get(unit.lower(), 1)
    return x


def _as_kv_text(text, service):
    """JSON or a table, rewritten as 'key: value; ...' text; other text as it is."""
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            data = json.loads(stripped)
        except ValueError:
            return text
        return "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in _flatten(_pick(data, service)))
    lines = [l for l in text.splitlines() if l.strip()]
    for i, line in enumerate(lines):
        cols = [c.strip() for c in re.split(r"\s{2,}|\t|\|", line.strip()) if c.strip()]
        lower = [c.lower() for c in cols]
        if len(cols) >= 3 and any("epoch" in c for c in lower) and ":" not in line:
            rows = [r for r in lines[i + 1:] if not set(r.strip()) <= set("-=+| ")]
            row = next((r for r in rows if service in r), rows[0] if rows else None)
            if row is None:
                break
            vals = [c.strip() for c in re.split(r"\s{2,}|\t|\|", row.strip()) if c.strip()]
            if len(vals) == len(cols):
                return "; ".join(f"{c}: {v}" for c, v in zip(cols, vals))
    return text


def _pick(data, service):
    """The part of a JSON status that is about SERVICE."""
    if isinstance(data, dict):
        for key in ("services", "service"):
            if key in data:
                return _pick(data[key], service)
        if service in data and isinstance(data[service], dict):
            return data[service]
        return data
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and service in (item.get("name"), item.get("service")):
                return item
        return data[0] if data else {}
    return data


def _flatten(data, prefix=""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _flatten(v, f"{prefix}{k} ")
    elif isinstance(data, list):
        yield prefix.strip(), " / ".join(str(x) for x in data)
    else:
        yield prefix.strip(), "none" if data is None else data


# ---------------------------------------------------------------- clients and checks

class Prober(cs.Load):
    """Writes a fresh key to one address every INTERVAL with a short timeout, recording
    every attempt as (sent, answered or failed at, ok, pid or error). A frozen service
    shows as timeouts, a dead one as refused connections."""

    def __init__(self, client, label, timeout=0.3, **kw):
        kw.setdefault("interval", 0.02)
        super().__init__(client, **kw)
        self.label, self.timeout = label, timeout
        self.attempts = []
        self.n = 0

    def step(self):
        self.n += 1
        t0 = time.monotonic()
        try:
            status, body = self.client.get("/set", {"k": f"{self.label}{self.n}", "v": str(self.n)},
                                           timeout=self.timeout)
        except cs.TestError as e:
            self.attempts.append((t0, time.monotonic(), False, str(e).split(": ")[-1]))
            return
        ok = status == 200 and isinstance(body, dict) and body.get("ok") is True
        self.attempts.append((t0, time.monotonic(), ok, body.get("pid") if ok else f"HTTP {status}"))

    def acks(self):
        return [a for a in list(self.attempts) if a[2]]


class Probing:
    """Probers on several clients at once, as a with-block: PROBING(a=client_a, b=client_b)
    starts a Prober labelled a on client_a and one labelled b on client_b, gives them in
    that order, and stops them all on the way out (also when a check raises)."""

    def __init__(self, **clients):
        self.probers = [Prober(client, label) for label, client in clients.items()]

    def __enter__(self):
        for p in self.probers:
            p.start()
        return self.probers

    def __exit__(self, *exc):
        for p in self.probers:
            p.stop()
        return False


class Writer(cs.KVWriter):
    """checksync.KVWriter with its own key PREFIX (default "k") and PAD bytes of padding
    in each value (bigger epochs)."""

    def __init__(self, client, prefix="k", pad=0, **kw):
        super().__init__(client, **kw)
        self.prefix, self.pad = prefix, "x" * pad

    def key(self, i):
        return f"{self.prefix}{i}"

    def value(self, i):
        return f"v{i}-{self.token}{self.pad}"


class BulkWriter(cs.Load):
    """Overwrites KEYS keys b0..b{KEYS-1} round-robin with PAD-byte values, to make every
    epoch large (a kill or a cut then likely lands while one is on the wire). Write
    number i goes to key b{i % KEYS} with value "i-token-xxx..."."""

    def __init__(self, client, keys=64, pad=100000, **kw):
        kw.setdefault("interval", 0.005)
        super().__init__(client, **kw)
        self.keys, self.pad = keys, "x" * pad
        self.token = secrets.token_hex(4)
        self.next = 0

    def step(self):
        i = self.next
        status, body = self.client.get("/set", {"k": f"b{i % self.keys}", "v": f"{i}-{self.token}-{self.pad}"},
                                       timeout=5)
        if status != 200 or not body.get("ok"):
            raise cs.TestError(f"/set b{i % self.keys}: status {status}")
        self.next = i + 1

    def wrong(self, items):
        """Bulk keys in ITEMS whose value this writer did not write there."""
        bad = []
        for k, v in items.items():
            m = re.fullmatch(r"b(\d+)", k)
            if not m:
                continue
            seq, _, rest = str(v).partition("-")
            ok = (seq.isdigit() and int(seq) % self.keys == int(m.group(1)) and int(seq) <= self.next
                  and rest == f"{self.token}-{self.pad}")
            if not ok:
                bad.append(f"{k}: {str(v)[:40]!r}...")
        return bad


def check_takeover_items(r, items, writer, first_post, durable, tag):
    """Checks the writer's keys in /items answered after a takeover.

    FIRST_POST is the index of the first write acknowledged after the takeover
    (every lower index was written to the primary only). Checked: no key of the
    writer holds a value other than the one it wrote (or a key it never wrote);
    the keys from before the takeover form a contiguous prefix k0..km (writes
    go one at a time, so any consistent copy of the primary holds a prefix: a
    hole means the copy mixes two moments); and every key in DURABLE is there.
    Returns m (-1 if no key from before the takeover is there)."""
    prefix = getattr(writer, "prefix", "k")
    wrong, pre = [], []
    for k, v in items.items():
        m = re.fullmatch(re.escape(prefix) + r"(\d+)", k)
        if not m:
            continue
        i = int(m.group(1))
        if i > writer.next:
            wrong.append(f"{k}={str(v)[:40]!r} was never written")
        elif v != writer.value(i):
            wrong.append(f"{k}={str(v)[:40]!r} (expected {writer.value(i)[:40]!r})")
        elif i < first_post:
            pre.append(i)
    r.check(f"{tag}: no key holds a value the client did not write", not wrong, "none",
            cs.summarize(wrong))
    pre.sort()
    top = pre[-1] if pre else -1
    holes = sorted(set(range(top + 1)) - set(pre))
    r.check(f"{tag}: the keys from before the takeover are a contiguous prefix {prefix}0..{prefix}{top} "
            f"(one consistent moment of A)", not holes, "no holes",
            f"{len(holes)} missing inside it: {holes[:10]}")
    missing = [k for k, v in durable.items() if items.get(k) != v]
    r.check(f"{tag}: all {len(durable)} writes acknowledged well before the kill are there",
            durable and not missing, "at least one such write (else this proves nothing), none missing",
            f"{len(missing)} missing or different, e.g. {missing[:5]}; B holds {prefix}0..{prefix}{top}")
    return top


Up = collections.namedtuple("Up", "topo dep backup primary service vip state")


def bring_up(topo, certs, binary, **kw):
    """Deployment in TOPO, backupd in B, primaryd in A, and waits until the service
    answers through the VIP and epoch 1 is acknowledged. KW go to Deployment."""
    dep = Deployment(topo, certs, binary, **kw)
    backup = dep.start_backupd()
    primary = dep.start_primaryd()
    service = service_proc(primary, binary)
    vip = dep.vip_client()
    state = cs.wait_serving(vip, service)
    wait_acked(primary, backup, at_least=1)
    return Up(topo, dep, backup, primary, service, vip, state)


SLACK_S = 0.3         # an RTT and scheduling, on top of one epoch interval
TAKEOVER_TIMEOUT = 30  # seconds from A's death to the first write served by B


def check_takeover(r, tag, up, writer, t_kill, others=()):
    """After A's processes are known dead (killed at T_KILL): the client's retried
    write must succeed through the VIP, served from B, with the data A had (see
    check_takeover_items), new writes must read back, the hook must have run.
    OTHERS (BulkWriters) are stopped and their keys checked too. Returns the time
    from T_KILL to the first write B acknowledged, in ms."""
    topo, dep, backup = up.topo, up.dep, up.backup
    writer.phase = 1  # A is gone: every answer from now on comes from B
    durable = writer.acked(before=t_kill - (dep.service["epoch_interval_ms"] / 1000 + SLACK_S))
    try:
        try:
            writer.wait_acks(1, phase=1, timeout=TAKEOVER_TIMEOUT)
        except cs.TestError:
            raise cs.TestError(
                f"{tag}: expected a write through the VIP to succeed on B within {TAKEOVER_TIMEOUT}s "
                f"of A's death; saw none (last error: {writer.last_error}); VIP on {topo.vip_holders()}; "
                f"hook runs {hook_runs(dep.hook_env)}; backupd alive {backup.alive()}, its log:\n"
                f"{backup.log_tail()}")
        first = min(t for i, p, t in writer.acks if p == 1)
        first_post = min(i for i, p, t in writer.acks if p == 1)
        writer.wait_acks(20, phase=1)
    finally:
        writer.stop()
        for o in others:
            o.stop()
    failover_ms = (first - t_kill) * 1000

    restored = running_in(topo, topo.b, up.dep.binary)
    r.check(f"{tag}: one kvserver runs in B after the takeover", len(restored) == 1, "exactly one", restored)
    st = up.vip.state()
    r.check(f"{tag}: the VIP is answered by a process in B's namespace", topo.in_netns(st["pid"], topo.b),
            f"a pid in netns {topo.b}", f"/state pid {st['pid']}")
    r.check(f"{tag}: the process in B is the original's copy (same instance id)",
            st["instance"] == up.state["instance"], up.state["instance"], st["instance"])
    items = up.vip.json("/items", timeout=60)
    top = check_takeover_items(r, items, writer, first_post, durable, tag)
    for o in others:
        bad = o.wrong(items)
        r.check(f"{tag}: the {o.keys} bulk keys hold values their writer wrote", not bad, "all",
                cs.summarize(bad))
    new = writer.acked(phase=1)
    problems = cs.kv_check(up.vip, new, each=False)
    r.check(f"{tag}: {len(new)} writes after the takeover read back", not problems, "all there",
            cs.summarize(problems))
    check_hook(r, tag, up, st["pid"])
    cs.log(f"{tag}: first write served by B {failover_ms:.0f} ms after the kill; B holds "
           f"{getattr(writer, 'prefix', 'k')}0..{top} ({len(durable)} required, "
           f"{max(len(writer.acked(phase=0)) - (top + 1), 0)} recent writes lost)")
    return failover_ms


def check_hook(r, tag, up, pid):
    """The takeover hook ran once, in B, with CHECKSYNC_SERVICE/PID/EPOCH, and moved the VIP."""
    runs = hook_runs(up.dep.hook_env)
    r.check(f"{tag}: the takeover hook ran once", len(runs) == 1, 1, len(runs))
    if not runs:
        return
    env = runs[-1]
    want_ns = _ns_link(pid)
    problems = []
    if env.get("CHECKSYNC_SERVICE") != SERVICE:
        problems.append(f"CHECKSYNC_SERVICE={env.get('CHECKSYNC_SERVICE')}, expected {SERVICE}")
    if env.get("CHECKSYNC_PID") != str(pid):
        problems.append(f"CHECKSYNC_PID={env.get('CHECKSYNC_PID')}, expected the restored pid {pid}")
    if not (env.get("CHECKSYNC_EPOCH") or "").isdigit() or int(env["CHECKSYNC_EPOCH"]) < 1:
        problems.append(f"CHECKSYNC_EPOCH={env.get('CHECKSYNC_EPOCH')}, expected an epoch >= 1")
    if env.get("NETNS") != want_ns:
        problems.append(f"the hook ran in {env.get('NETNS')}, expected B's {want_ns}")
    if "DONE" not in env:
        problems.append("it did not get to its end (DONE missing)")
    r.check(f"{tag}: the hook was given the service, the pid and the epoch, and ran in B", not problems,
            "all set", cs.summarize(problems))
    r.check(f"{tag}: the VIP is on B only", up.topo.vip_holders() == [up.topo.b], [up.topo.b],
            up.topo.vip_holders())


def _ns_link(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return "?"


def kill_now(*procs):
    """SIGKILLs every process in PROCS at once (no waiting in between); returns the
    monotonic time just before the first signal."""
    t = time.monotonic()
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return t


def stats(values):
    """'min/median/max' of a list of numbers (ms), for the logs."""
    if not values:
        return "none"
    v = sorted(values)
    return f"min {v[0]:.0f} ms, median {v[len(v) // 2]:.0f} ms, max {v[-1]:.0f} ms (n={len(v)})"
