#!/usr/bin/env python3
"""Role swap: both daemons on both hosts, the same service file, a double failover per round.

Usage: test_roles.py ROUNDS OUTPUT_COMMIT      (e.g. `test_roles.py 10 on`)

Hosts A and B (network namespaces on a bridge, tests/lib/replication.py; a
client in C) each run checksync-backupd and checksync-primaryd, with one
certificate per host (a.test, b.test, both EKUs) and the same service file:
`role_swap = on`, `hosts = a.test=A:7000 b.test=B:7000` (A, the first,
starts kvserver), `output_commit = OUTPUT_COMMIT`. Each daemon file says
which host it is (`host_name`) and the other daemon's socket on the host
(`primaryd_socket`, `backupd_socket`).

At the start A's primaryd starts kvserver and replicates to B; B's primaryd
is standby and starts nothing. Then each round fails over twice:

  1. Writes to the serving host (A), every one acknowledged to the client.
     With output commit on, the host dies right after the last
     acknowledgement, and its primaryd's status must say output commit is
     in force and show the replies released through its queue (a restored
     service whose listener is outside its cgroup answers past the queue);
     with it off, once the epoch after it is acknowledged (replication is
     asynchronous, and then only that is promised).
  2. A dies: its primaryd is killed first, and the service must die with it
     on its own within DIE_WITH_GUARD_S (it dies with its guard, started or
     adopted); then everything left in A's namespace is killed.
  3. B's backupd restores kvserver and hands it to B's primaryd: B's
     primaryd says `primary` with that pid (an adopted service, not one it
     started), the pid is not held under ptrace between epochs (TracerPid
     is 0 in most samples), and every key acknowledged so far reads back
     from B with its value; with output commit on, B's primaryd says the
     service's output passes unheld while no backup answers (none can hold
     its state; holding would stop it until A is back).
  4. A's daemons start again: A's primaryd must stay standby and start no
     copy (exactly one kvserver in A and B), and B's primaryd must
     replicate to A: acknowledged epochs newer than the one restored.
  5. The same with the roles swapped: writes to B, B dies, A serves every
     key, B's daemons come back, A replicates to B.

Then A's primaryd alone is killed and started again at once (as systemd's
Restart= does): its service dies with it, the restarted primaryd starts
afresh, B's backupd takes over at once (no failover timeout), B's primaryd
adopts, A's primaryd is standby, every key is served and B replicates to
A's backupd, which ran throughout. Then planned handovers B -> A -> B
(`checksync-primaryd handover kvserver`), after B's backupd has lost its state
and A's primaryd restarted meanwhile: B's backupd answers A's primaryd as if
nothing ran, but A's own backupd has B's primaryd connected, so A's primaryd
stays standby (no second copy). Then A restarts all its daemons at once,
primaryd first (a boot orders nothing), while B's primaryd cannot reach A's
backupd for a second: A's primaryd must start nothing, neither while its
own backupd does not answer, nor once that backupd answers holding the
run's epochs with B's primaryd not yet reconnected. Each handover: the other host serves
every key, adopted by its primaryd, the handing primaryd is standby (not
deposed for good) and the new primary replicates back.

Last, both hosts die at once (B serving, A holding B's newest epochs). B
comes back alone: its backupd holds the epoch it restored itself, so it
must restore nothing (not within STALE_WAIT_S, more than two failover
timeouts), and B's primaryd (standby) must start no copy. Then A comes
back: B's backupd refuses A's primaryd's fresh start (its image was
restored once), A's backupd takes over from its newer epoch, A's primaryd
(still starting) adopts it and replicates it to B; every key is served.

Throughout, no copy is restored twice: every takeover in the backupd logs
(`took over service ... from epoch E`) comes once per failover and
restores a newer epoch than the one before, and at every check exactly one
kvserver runs. At the end every key acknowledged before every kill is
served with its value.
"""

import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

KEYS_PER_PHASE = 5
DIE_WITH_GUARD_S = 3.0
TAKEOVER_S = 30  # from the kill to the adopted service answering
RECONNECT_HELD_S = 1.0  # < 2 x failover_timeout_ms: a restarted backupd's quiet time
STALE_WAIT_S = 4.0  # > 2 x failover_timeout_ms: a restarted backupd's quiet time, then the timeout
TOOK_OVER = re.compile(r"took over service \S+: restored pid (\d+) from epoch (\d+)")


def make_host_certs(ips):
    """One certificate per host NAME (DNS:NAME, IP:ip, serverAuth and clientAuth) from one CA:
    its backupd listens with it, its primaryd connects with it."""
    d = cs.run_dir("certs")
    with open(os.path.join(d, "cnf"), "w") as f:
        f.write(rp._OPENSSL_CNF)

    def openssl(*args, san="DNS:x", eku="serverAuth, clientAuth"):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, SAN=san, EKU=eku))
        if r.returncode != 0:
            raise cs.TestError(f"`openssl {' '.join(args)}` failed: {r.stderr.strip()}")

    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key")
    openssl("req", "-new", "-x509", "-config", "cnf", "-extensions", "v3_ca", "-key", "ca.key",
            "-subj", "/CN=CheckSync roles CA", "-days", "2", "-out", "ca.crt")
    out = {}
    for name, ip in ips.items():
        san = f"DNS:{name}, IP:{ip}"
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")
        openssl("req", "-new", "-config", "cnf", "-key", f"{name}.key", "-subj", f"/CN={name}",
                "-out", f"{name}.csr", san=san)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "cnf", "-extensions", "v3_leaf",
                "-out", f"{name}.crt", san=san)
        os.chmod(os.path.join(d, f"{name}.key"), 0o600)
        out[name] = (os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
    return os.path.join(d, "ca.crt"), out


class Host:
    """One host: its namespace, its two daemons' files, and the daemons while they run."""

    def __init__(self, topo, ns, name, root, ca, cert, service_text):
        self.topo, self.ns, self.name = topo, ns, name
        self.addr = topo.addr[ns]
        self.dir = os.path.join(root, name)
        self.primary, self.backup = None, None
        tag = f"{name}-{os.path.basename(root)}"[:24]
        self.sock = {"primary": f"{topo.sockdir}/{tag}-p.sock", "backup": f"{topo.sockdir}/{tag}-b.sock"}
        for sub in ("services", "state-primary", "state-backup"):
            os.makedirs(os.path.join(self.dir, sub))
        tls = f"[tls]\nca = {ca}\ncert = {cert[0]}\nkey = {cert[1]}\n"
        self.primary_conf = os.path.join(self.dir, "primary.conf")
        self.backup_conf = os.path.join(self.dir, "backup.conf")
        rp.write_file(self.primary_conf, f"""\
[daemon]
host_name = {name}
backupd_socket = {self.sock['backup']}
state_dir = {self.dir}/state-primary
services_dir = {self.dir}/services
status_socket = {self.sock['primary']}
{tls}""")
        rp.write_file(self.backup_conf, f"""\
[daemon]
host_name = {name}
listen = {self.addr}:{rp.BACKUP_PORT}
state_dir = {self.dir}/state-backup
services_dir = {self.dir}/services
status_socket = {self.sock['backup']}
primaryd_socket = {self.sock['primary']}
{tls}""")
        rp.write_file(os.path.join(self.dir, "services", f"{rp.SERVICE}.conf"), service_text)

    def __str__(self):
        return f"host {self.name}"

    def start(self):
        self.backup = rp.start_daemon("backupd", cs.backupd(), self.backup_conf, self.ns, self.dir,
                                      self.topo.sockdir, socket_path=self.sock["backup"])
        self.primary = rp.start_daemon("primaryd", cs.primaryd(), self.primary_conf, self.ns, self.dir,
                                       self.topo.sockdir, socket_path=self.sock["primary"])
        rp.wait_status(self.backup)
        rp.wait_status(self.primary)

    def restart(self, kind, wipe=False):
        """kill -9 one daemon ("primary" or "backup") and start it again, its state wiped if WIPE."""
        d = self.primary if kind == "primary" else self.backup
        d.kill9()
        d.proc.wait_gone(5)
        if wipe:
            shutil.rmtree(os.path.join(self.dir, f"state-{kind}", rp.SERVICE), ignore_errors=True)
        d = rp.start_daemon(f"{kind}d", cs.primaryd() if kind == "primary" else cs.backupd(),
                            self.primary_conf if kind == "primary" else self.backup_conf, self.ns,
                            self.dir, self.topo.sockdir, socket_path=self.sock[kind])
        rp.wait_status(d)
        if kind == "primary":
            self.primary = d
        else:
            self.backup = d

    def kill(self, binary):
        """The host dies: primaryd first, and the service must die with it by itself (its
        guard is gone); then every process left in the namespace. Returns the service's
        pid and whether it died on its own within DIE_WITH_GUARD_S."""
        svc = rp.running_in(self.topo, self.ns, binary)
        self.primary.kill9()
        deadline = time.monotonic() + DIE_WITH_GUARD_S
        while rp.running_in(self.topo, self.ns, binary) and time.monotonic() < deadline:
            time.sleep(0.02)
        died = not rp.running_in(self.topo, self.ns, binary)
        r = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        pids = [int(p) for p in r.stdout.split() if int(p) != os.getpid()]
        for p in pids:
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        rp.wait_for(f"every process of {self} gone", lambda: not subprocess.run(
            ["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split(), 15)
        self.primary = self.backup = None
        return svc, died

    def client(self):
        return cs.Client(self.addr, rp.PORT, netns=self.topo.c)

    def takeovers(self):
        """[(pid, epoch)] of every takeover in this host's backupd log (all its runs)."""
        try:
            with open(os.path.join(self.dir, "backupd.log"), errors="replace") as f:
                return [(int(p), int(e)) for p, e in TOOK_OVER.findall(f.read())]
        except OSError:
            return []


def backupd_row(host, row):
    """One figure of HOST's backupd's status socket, None when it has no value."""
    for svc, _, name, _, value in rp.status_socket_rows(host.sock["backup"]):
        if svc == rp.SERVICE and name == row:
            return None if value is None or value != value else int(value)
    raise cs.TestError(f"{host}'s backupd status has no {row} row")


def primaryd_row(host, row):
    """One figure of HOST's primaryd's status socket, None when it has none."""
    for svc, _, name, _, value in rp.status_socket_rows(host.sock["primary"]):
        if svc == rp.SERVICE and name == row:
            return None if value is None or value != value else value
    return None


def restored_once(host):
    """HOST's backupd's restored_once row (the epoch it will not restore again), or None."""
    return backupd_row(host, "restored_once")


def tracer_free_share(pid, samples=12, interval=0.02):
    """The share of SAMPLES reads of /proc/PID/status with TracerPid 0."""
    free = 0
    for _ in range(samples):
        with open(f"/proc/{pid}/status") as f:
            tracer = next(int(l.split()[1]) for l in f if l.startswith("TracerPid:"))
        free += tracer == 0
        time.sleep(interval)
    return free / samples


class Run:
    def __init__(self, r, topo, hosts, binary, output_commit):
        self.r, self.topo, self.binary, self.oc = r, topo, binary, output_commit
        self.hosts = hosts
        self.expected = {}
        self.restored = []  # (host, pid, epoch) of every takeover, in order
        self.failovers = 0
        self.times = []

    def one_copy(self, tag):
        where = {h.name: rp.running_in(self.topo, h.ns, self.binary) for h in self.hosts}
        n = sum(len(v) for v in where.values())
        self.r.require(f"{tag}: exactly one kvserver runs in A and B", n == 1, "one", where)
        return next(h for h in self.hosts if where[h.name]), next(v[0] for v in where.values() if v)

    def write(self, host, tag):
        token = f"{self.failovers}"
        released = primaryd_row(host, "output_released_packets") or 0
        got = cs.kv_write(host.client(), f"f{self.failovers}-k", KEYS_PER_PHASE, token, retries=20)
        self.expected.update(got)
        if self.oc:
            # every acknowledged reply's state is in an acknowledged epoch already: the
            # replies went through the queue (a restored listener outside the service's
            # cgroup answers past it, while status says held)
            held = (primaryd_row(host, "output_commit"), primaryd_row(host, "output_passing"))
            self.r.check(f"{tag}: output commit holds {host}'s service", held == (1, 0),
                         "output_commit 1, output_passing 0", held)
            now = primaryd_row(host, "output_released_packets") or 0
            self.r.check(f"{tag}: the {len(got)} replies of {host}'s service were held and "
                         f"released by its primaryd", now - released >= len(got),
                         f">= {len(got)} packets released", now - released)
            return
        st = host.primary.status()
        want = st["epoch"] + 1
        rp.wait_for(f"{host}'s primaryd to have epoch {want} acknowledged",
                    lambda: host.primary.status().get("acked", 0) >= want, 20)

    def failover(self, dead, alive, tag):
        """DEAD serves: write, kill it, ALIVE takes over and adopts, DEAD comes back as backup."""
        self.write(dead, tag)
        before = len(alive.takeovers())
        t_kill = time.monotonic()
        svc, died = dead.kill(self.binary)
        self.failovers += 1
        self.r.check(f"{tag}: {dead}'s service {svc} died with its guard (primaryd killed) within "
                     f"{DIE_WITH_GUARD_S:g} s", died, "gone", "still running")
        # ALIVE's primaryd adopts what its backupd restored
        st = rp.wait_for(f"{alive}'s primaryd to be primary of an adopted service",
                         lambda: (lambda s: s if s.get("role") == "primary" and s.get("pid") else None)(
                             alive.primary.status()), TAKEOVER_S, 0.1)
        took = alive.takeovers()[before:]
        self.r.require(f"{tag}: {alive}'s backupd restored the service once", len(took) == 1,
                       "one takeover", took)
        pid, epoch = took[0]
        self.times.append((time.monotonic() - t_kill) * 1000)
        last = self.restored[-1][2] if self.restored else 0
        self.r.check(f"{tag}: the restored epoch {epoch} is newer than the last one restored ({last})",
                     epoch > last, f"> {last}", epoch)
        self.restored.append((alive.name, pid, epoch))
        self.r.check(f"{tag}: {alive}'s primaryd guards the restored pid", st.get("pid") == pid,
                     pid, st.get("pid"))
        host, running = self.one_copy(f"{tag}, after the takeover")
        self.r.check(f"{tag}: the copy runs on {alive}", host is alive and running == pid,
                     f"pid {pid} on {alive}", f"pid {running} on {host}")
        share = tracer_free_share(pid)
        self.r.check(f"{tag}: the adopted service is not held under ptrace between epochs",
                     share > 0.5, "TracerPid 0 in most samples", f"{share:.0%}")
        problems = cs.kv_check(alive.client(), self.expected, each=False)
        self.r.check(f"{tag}: every acknowledged write ({len(self.expected)}) served by {alive}",
                     not problems, "all", cs.summarize(problems))
        if self.oc:  # no backup can acknowledge: it answers, and status says its output is unheld
            passing = primaryd_row(alive, "output_passing")
            self.r.check(f"{tag}: {alive}'s primaryd says the adopted service's output passes "
                         f"unheld while no backup answers", passing == 1, 1, passing)
        # DEAD comes back: standby, and the backup of ALIVE
        dead.start()
        rp.wait_for(f"{alive}'s primaryd to have an epoch after {epoch} acknowledged by {dead}",
                    lambda: alive.primary.status().get("acked", 0) > epoch, TAKEOVER_S, 0.1)
        rp.wait_for(f"{dead}'s backupd to hold an epoch after {epoch}",
                    lambda: dead.backup.status().get("epoch", 0) > epoch, 10, 0.1)
        role = dead.primary.status().get("role")
        self.r.check(f"{tag}: {dead}'s restarted primaryd is standby", role == "standby", "standby", role)
        self.one_copy(f"{tag}, after {dead} came back")
        cs.log(f"{tag}: {alive} serves pid {pid} from epoch {epoch}, replicated to {dead}; "
               f"{len(self.expected)} keys")


def primaryd_restart(run, serving, other):
    """SERVING's primaryd is killed and restarted at once; OTHER takes over without waiting."""
    r, tag = run.r, "primaryd restart"
    run.write(serving, tag)
    before = len(other.takeovers())
    svc = rp.running_in(run.topo, serving.ns, run.binary)
    serving.restart("primary")
    run.failovers += 1
    r.check(f"{tag}: {serving}'s service {svc} died with its primaryd",
            not set(svc) & set(rp.running_in(run.topo, serving.ns, run.binary)), "gone", svc)
    st = rp.wait_for(f"{other}'s primaryd to be primary of an adopted service",
                     lambda: (lambda s: s if s.get("role") == "primary" and s.get("pid") else None)(
                         other.primary.status()), TAKEOVER_S, 0.1)
    took = other.takeovers()[before:]
    r.require(f"{tag}: {other}'s backupd restored the service once", len(took) == 1, "one", took)
    pid, epoch = took[0]
    run.restored.append((other.name, pid, epoch))
    r.check(f"{tag}: {other}'s primaryd guards the restored pid", st.get("pid") == pid, pid, st.get("pid"))
    run.one_copy(f"{tag}, after it")
    role = serving.primary.status().get("role")
    r.check(f"{tag}: {serving}'s restarted primaryd is standby", role == "standby", "standby", role)
    problems = cs.kv_check(other.client(), run.expected, each=False)
    r.check(f"{tag}: every acknowledged write ({len(run.expected)}) served by {other}",
            not problems, "all", cs.summarize(problems))
    rp.wait_for(f"{other}'s primaryd to have an epoch after {epoch} acknowledged by {serving}",
                lambda: other.primary.status().get("acked", 0) > epoch, TAKEOVER_S, 0.1)


def lost_state(run, serving, other):
    """SERVING's backupd loses its state; OTHER's primaryd (the first host) restarts: SERVING's
    backupd answers it as if nothing ran, but SERVING's primaryd replicates to OTHER's backupd,
    which tells OTHER's primaryd: standby, no fresh copy."""
    r, tag = run.r, "the serving host's backupd lost its state"
    before = len(serving.takeovers()) + len(other.takeovers())
    serving.restart("backup", wipe=True)
    rp.wait_for(f"{other}'s backupd to have {serving}'s primaryd connected",
                lambda: backupd_row(other, "connected") == 1, 10, 0.1)
    other.restart("primary")
    time.sleep(2.0)  # it would have started a copy by now: HELLO is answered in milliseconds
    role = other.primary.status().get("role")
    r.check(f"{tag}: {other}'s restarted primaryd is standby", role == "standby", "standby", role)
    run.one_copy(tag)
    r.check(f"{tag}: nothing restored", len(serving.takeovers()) + len(other.takeovers()) == before,
            before, len(serving.takeovers()) + len(other.takeovers()))
    problems = cs.kv_check(serving.client(), run.expected, each=False)
    r.check(f"{tag}: every acknowledged write ({len(run.expected)}) still served by {serving}",
            not problems, "all", cs.summarize(problems))


def restart_at_once(run, serving, other):
    """OTHER (the first host) restarts all its daemons at once, primaryd first (no order at
    boot), while SERVING serves and SERVING's backupd, which lost its state, answers OTHER's
    primaryd as if nothing ran; SERVING's primaryd cannot reach OTHER's backupd yet (held
    back for RECONNECT_HELD_S, as its half-second retry may be). OTHER's primaryd must start
    no copy: its backupd does not answer at first, then holds the run's epochs."""
    r, tag = run.r, "the first host restarts at once"
    before = len(serving.takeovers()) + len(other.takeovers())
    for d in (other.primary, other.backup):
        d.kill9()
        d.proc.wait_gone(5)
    # Refused (a reset), not dropped: a dropped SYN holds the peer's connect in TCP's
    # retransmission backoff (1, 3, 7 s) up to its 10 s handshake deadline, so that once the
    # rule went it reconnected only seconds later, past the 10 s wait below on a loaded
    # machine. Refused, it tries again every half second, as the docstring says.
    reject = ["-j", "REJECT", "--reject-with", "tcp-reset"]
    block = ["ip", "netns", "exec", other.ns, "iptables", "-w", "-I", "INPUT", "-p", "tcp",
             "--dport", str(rp.BACKUP_PORT)] + reject
    subprocess.run(block, check=True, timeout=30)
    try:
        other.primary = rp.start_daemon("primaryd", cs.primaryd(), other.primary_conf, other.ns,
                                        other.dir, other.topo.sockdir, socket_path=other.sock["primary"])
        rp.wait_status(other.primary)
        time.sleep(0.5)  # it has asked the peer's backupd (answered at once) and its own by now
        other.backup = rp.start_daemon("backupd", cs.backupd(), other.backup_conf, other.ns,
                                       other.dir, other.topo.sockdir, socket_path=other.sock["backup"])
        rp.wait_status(other.backup)
        time.sleep(RECONNECT_HELD_S)
        role = other.primary.status().get("role")
        r.check(f"{tag}: {other}'s primaryd, its backupd late and the peer's primaryd not yet "
                f"back, is standby", role == "standby", "standby", role)
        run.one_copy(f"{tag}, before {serving}'s primaryd is back")
    finally:
        subprocess.run(["ip", "netns", "exec", other.ns, "iptables", "-w", "-D", "INPUT", "-p",
                        "tcp", "--dport", str(rp.BACKUP_PORT)] + reject, check=True, timeout=30)
    rp.wait_for(f"{other}'s backupd to have {serving}'s primaryd connected",
                lambda: backupd_row(other, "connected") == 1, 10, 0.1)
    run.one_copy(f"{tag}, once {serving}'s primaryd is back")
    r.check(f"{tag}: nothing restored", len(serving.takeovers()) + len(other.takeovers()) == before,
            before, len(serving.takeovers()) + len(other.takeovers()))
    problems = cs.kv_check(serving.client(), run.expected, each=False)
    r.check(f"{tag}: every acknowledged write ({len(run.expected)}) still served by {serving}",
            not problems, "all", cs.summarize(problems))


def handover(run, serving, other):
    """A planned handover from SERVING: OTHER adopts, SERVING's primaryd is standby."""
    r, tag = run.r, "handover"
    run.write(serving, tag)
    before = len(other.takeovers())
    res = cs.run_engine([cs.primaryd(), "handover", rp.SERVICE, "--config", serving.primary_conf],
                        serving.ns, timeout=60)
    r.require(f"{tag}: `checksync-primaryd handover` on {serving} succeeds", res.rc == 0, "exit 0",
              f"exit {res.rc}: {(res.stderr or res.stdout).strip()}")
    run.failovers += 1
    st = rp.wait_for(f"{other}'s primaryd to be primary of an adopted service",
                     lambda: (lambda s: s if s.get("role") == "primary" and s.get("pid") else None)(
                         other.primary.status()), TAKEOVER_S, 0.1)
    took = other.takeovers()[before:]
    r.require(f"{tag}: {other}'s backupd restored the service once", len(took) == 1, "one", took)
    pid, epoch = took[0]
    run.restored.append((other.name, pid, epoch))
    r.check(f"{tag}: {other}'s primaryd guards the restored pid", st.get("pid") == pid, pid, st.get("pid"))
    run.one_copy(f"{tag}, after it")
    role = serving.primary.status().get("role")
    r.check(f"{tag}: {serving}'s primaryd is standby after handing over", role == "standby", "standby", role)
    problems = cs.kv_check(other.client(), run.expected, each=False)
    r.check(f"{tag}: every acknowledged write ({len(run.expected)}) served by {other}",
            not problems, "all", cs.summarize(problems))
    rp.wait_for(f"{other}'s primaryd to have an epoch after {epoch} acknowledged by {serving}",
                lambda: other.primary.status().get("acked", 0) > epoch, TAKEOVER_S, 0.1)


def both_die(run, serving, other):
    """Both hosts die; SERVING, which restored the epoch its backupd holds, comes back alone and
    must restore nothing; then OTHER, holding newer epochs, comes back and serves them."""
    r, tag = run.r, "both hosts die"
    run.write(serving, tag)
    before = {h.name: len(h.takeovers()) for h in run.hosts}
    for h in (serving, other):
        h.kill(run.binary)
    run.failovers += 1
    serving.start()
    time.sleep(STALE_WAIT_S)
    r.check(f"{tag}: {serving}, back alone, restores nothing (its image was restored once)",
            len(serving.takeovers()) == before[serving.name], before[serving.name],
            serving.takeovers()[before[serving.name]:])
    where = rp.running_in(run.topo, serving.ns, run.binary)
    r.check(f"{tag}: {serving}, back alone, runs no copy", not where, "none", where)
    mine = run.restored[-1][2] if run.restored and run.restored[-1][0] == serving.name else None
    seen = restored_once(serving)
    r.check(f"{tag}: {serving}'s backupd status says which epoch it restored once", seen == mine,
            mine, seen)
    other.start()
    st = rp.wait_for(f"{other}'s primaryd to be primary of an adopted service",
                     lambda: (lambda s: s if s.get("role") == "primary" and s.get("pid") else None)(
                         other.primary.status()), TAKEOVER_S, 0.1)
    took = other.takeovers()[before[other.name]:]
    r.require(f"{tag}: {other}'s backupd restored the service once", len(took) == 1, "one", took)
    pid, epoch = took[0]
    last = run.restored[-1][2] if run.restored else 0
    r.check(f"{tag}: {other} restored epoch {epoch}, newer than the last one restored ({last})",
            epoch > last, f"> {last}", epoch)
    run.restored.append((other.name, pid, epoch))
    r.check(f"{tag}: {other}'s primaryd guards the restored pid", st.get("pid") == pid, pid, st.get("pid"))
    run.one_copy(f"{tag}, after {other} took over")
    problems = cs.kv_check(other.client(), run.expected, each=False)
    r.check(f"{tag}: every acknowledged write ({len(run.expected)}) served by {other}",
            not problems, "all", cs.summarize(problems))
    rp.wait_for(f"{other}'s primaryd to have an epoch after {epoch} acknowledged by {serving}",
                lambda: other.primary.status().get("acked", 0) > epoch, TAKEOVER_S, 0.1)
    role = serving.primary.status().get("role")
    r.check(f"{tag}: {serving}'s primaryd is standby", role == "standby", "standby", role)
    rp.wait_for(f"{serving}'s backupd, holding newer epochs, to drop its restored_once epoch",
                lambda: restored_once(serving) is None, 10, 0.1)


def check_end(r, run, a, b):
    """What every run ends on: one copy serves every acknowledged write, and no copy
    was restored twice (one takeover per failover, each of a newer epoch)."""
    host, _ = run.one_copy("at the end")
    problems = cs.kv_check(host.client(), run.expected, each=True)
    r.check(f"at the end: every write acknowledged before each kill ({len(run.expected)}) is "
            f"served by {host}", not problems, "all", cs.summarize(problems))
    all_takeovers = a.takeovers() + b.takeovers()
    r.check("no backupd restored anything beyond one copy per failover",
            len(all_takeovers) == run.failovers, run.failovers, all_takeovers)
    epochs = [e for _, _, e in run.restored]
    r.check("no copy restored twice: one takeover per failover, each of a newer epoch",
            len(epochs) == run.failovers and epochs == sorted(set(epochs)),
            f"{run.failovers} increasing epochs", epochs)


def main(r):
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    oc = (sys.argv[2] if len(sys.argv) > 2 else "on") == "on"
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        a_ip, b_ip = topo.addr[topo.a], topo.addr[topo.b]
        ca, certs = make_host_certs({"a.test": a_ip, "b.test": b_ip})
        keys = dict(rp.TIMING, name=rp.SERVICE, command=f"{binary} -addr 0.0.0.0:{rp.PORT}",
                    executable=binary, role_swap="on",
                    hosts=f"a.test={a_ip}:{rp.BACKUP_PORT} b.test={b_ip}:{rp.BACKUP_PORT}",
                    output_commit="on" if oc else "off")
        text = "# written by the test\n[service]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
        root = cs.run_dir("roles")
        a = Host(topo, topo.a, "a.test", root, ca, certs["a.test"], text)
        b = Host(topo, topo.b, "b.test", root, ca, certs["b.test"], text)
        run = Run(r, topo, (a, b), binary, oc)
        a.start()
        b.start()
        rp.wait_for("A's primaryd to have epoch 1 acknowledged by B",
                    lambda: a.primary.status().get("acked", 0) >= 1, 30, 0.1)
        role = b.primary.status().get("role")
        r.check("B's primaryd (not the first host) is standby", role == "standby", "standby", role)
        _, pid = run.one_copy("at the start")
        links = [l for l in subprocess.run(["ip", "netns", "exec", a.ns, "ss", "-tnp"],
                                           capture_output=True, text=True).stdout.splitlines()
                 if f":{rp.BACKUP_PORT} " in l and f"pid={pid}," in l]
        r.check("the started service holds none of primaryd's descriptors (its link to B)",
                not links, "none", links)
        t0 = time.monotonic()
        for n in range(1, rounds + 1):
            run.failover(a, b, f"round {n}, A -> B")
            run.failover(b, a, f"round {n}, B -> A")
        cs.log(f"{rounds} rounds ({run.failovers} failovers) in {time.monotonic() - t0:.0f} s; "
               f"kill to adopted primary: {rp.stats(run.times)}")
        primaryd_restart(run, a, b)
        lost_state(run, b, a)
        restart_at_once(run, b, a)
        handover(run, b, a)
        handover(run, a, b)
        both_die(run, b, a)
        check_end(r, run, a, b)


if __name__ == "__main__":
    cs.run(main)
