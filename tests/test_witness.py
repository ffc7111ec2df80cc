#!/usr/bin/env python3
"""The etcd witness: a third vote, so that losing the backup does not stop the service
and a partition never leaves two copies answering.

Hosts as namespaces (tests/lib/replication.py: A primary, B backup, C clients, a
switch) and etcd members, real etcd processes (Debian's etcd-server), each in a
namespace of its own on the same switch (E1..E3, 10.213.N.11-13). The service file
(the same on both hosts) names them: `witness = http://E1:2379,...`,
`witness_ttl_ms = 1000` (etcd runs with heartbeat 50 ms, election 500 ms, so a
1 s lease is honoured), failover_timeout_ms 2000 (at least TTL + 1 s: etcd
revokes an expired lease up to 0.5 s late, and A's last keepalive may be a
third of a TTL old at the cut), lease_ms 500.

Scenarios (argv[1]; `all` runs the default set):

  backup-loss       one etcd member. Host B dies (backupd killed, B's port down)
                    while a client writes to A through the service address:
                    A keeps acknowledging writes for 4 s (no gap over 1 s), and
                    says UNPROTECTED (reason 8, "serving on without it") in
                    status, in STATUS= and in /metrics. Then the etcd member is
                    killed too: A freezes (no write acknowledged from 2 s after
                    that on) and says frozen.
  backup-loss-freeze   no witness, on_backup_loss unset (freeze, today's rule):
                    host B dies: A is frozen within 1.5 s and stays so.
  backup-loss-fence    no witness, on_backup_loss = continue with a fence hook:
                    A serves on, unprotected.
  restart           one etcd member: primaryd kill -9 and restarted at once: B takes
                    the image over (the dead run's lease expires first), A
                    starts nothing, B serves every write.
  handover          one etcd member: `checksync-primaryd handover` with a witness:
                    A revokes its lease, B takes the key before it restores, and
                    serves every write made before.
  tls               one etcd member asking for client certificates (https, the
                    test's CA): A holds the key with witness_ca/cert/key, and
                    serves on when host B dies.
  partitions [N]    three etcd members. Each of A|B, A|etcd, B|etcd and A|(B+etcd)
                    is cut N times (default 2; the soak suite runs 5), with
                    clients in C writing to A's and to B's own addresses all
                    along. Checked each time: never two copies answering (no
                    write acknowledged by A that was sent after B had
                    acknowledged one), and the side that holds the key serves
                    within failover_timeout + 300 ms: A (no gap longer than that
                    in its acknowledgements) for the first three, B (its first
                    acknowledgement at most that long after the cut) for the
                    last. A cut is iptables DROP rules in the namespace of the
                    host cut off, both directions, for 4 s.
"""

import os
import re
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

METRICS_PORT = 9464
ETCD_PORT = 2379
ETCD_PEER = 2380
TIMING = dict(failover_timeout_ms=2000, lease_ms=500, heartbeat_interval_ms=50)
TTL_MS = 1000
CUT_S = 4.0
SLACK_MS = 300


# ---------------------------------------------------------------- etcd hosts

class WitnessTopology(rp.Topology):
    """rp.Topology plus MEMBERS etcd hosts cs-e{i}-<rand> on the same switch."""

    def __init__(self, members):
        super().__init__()
        suffix = self.a.rsplit("-", 1)[1]
        self.etcd = [f"{cs.NETNS_PREFIX}-e{i}-{suffix}" for i in range(1, members + 1)]
        for i, ns in enumerate(self.etcd):
            self.addr[ns] = f"10.213.{self.net}.{11 + i}"
            self.port[ns] = f"port-e{i + 1}"
        self.members = {}

    def __enter__(self):
        super().__enter__()
        try:
            for ns in self.etcd:
                cs._ip("netns", "add", ns)
                self._created.append(ns)
                cs._ip("-n", ns, "link", "set", "lo", "up")
                cs._ip("-n", self.sw, "link", "add", self.port[ns], "type", "veth", "peer", "name",
                       rp.DEV, "netns", ns)
                cs._ip("-n", self.sw, "link", "set", self.port[ns], "master", "br0", "up")
                cs._ip("-n", ns, "addr", "add", self.addr[ns] + "/24", "dev", rp.DEV)
                cs._ip("-n", ns, "link", "set", rp.DEV, "up")
        except BaseException:
            self.close()
            raise
        return self

    scheme = "http"
    etcdctl_tls = ()

    def urls(self):
        return ",".join(f"{self.scheme}://{self.addr[ns]}:{ETCD_PORT}" for ns in self.etcd)

    def start_etcd(self, tls=None):
        """One etcd per member namespace, one cluster; waits until it answers. TLS: (ca, cert,
        key) of etcd's client side, which then asks for client certificates of that CA."""
        d = cs.run_dir("etcd")
        self.scheme = "https" if tls else "http"
        tls_args = ["--trusted-ca-file", tls[0], "--cert-file", tls[1], "--key-file", tls[2],
                    "--client-cert-auth"] if tls else []
        cluster = ",".join(f"m{i}=http://{self.addr[ns]}:{ETCD_PEER}" for i, ns in enumerate(self.etcd))
        for i, ns in enumerate(self.etcd):
            ip = self.addr[ns]
            log = open(os.path.join(d, f"m{i}.log"), "wb")
            popen = subprocess.Popen(cs.netns_prefix(ns) + [
                "etcd", "--name", f"m{i}", "--data-dir", os.path.join(d, f"m{i}"),
                "--listen-client-urls", f"{self.scheme}://{ip}:{ETCD_PORT}",
                "--advertise-client-urls", f"{self.scheme}://{ip}:{ETCD_PORT}", *tls_args,
                "--listen-peer-urls", f"http://{ip}:{ETCD_PEER}",
                "--initial-advertise-peer-urls", f"http://{ip}:{ETCD_PEER}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--heartbeat-interval", "50", "--election-timeout", "500"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            p = cs.Proc(popen.pid, f"etcd m{i} in {ns}", popen, os.path.join(d, f"m{i}.log"))
            cs._procs.append(p)
            self.members[ns] = p
        rp.wait_for("etcd answering a put", lambda: self.etcdctl("put", "/checksync/probe", "1").returncode == 0,
                    30, 0.2)

    def etcdctl(self, *args):
        ns = next(ns for ns in self.etcd if self.members[ns].alive())
        return subprocess.run(cs.netns_prefix(self.c) + [
            "etcdctl", "--endpoints", self.urls(), *self.etcdctl_tls,
            "--dial-timeout", "2s", "--command-timeout", "3s", *args],
            capture_output=True, text=True, timeout=30, env=dict(os.environ, ETCDCTL_API="3")) \
            if ns else None

    def owner(self):
        r = self.etcdctl("get", "--print-value-only", f"/checksync/{rp.SERVICE}/owner")
        return r.stdout.strip() if r and r.returncode == 0 else f"? ({r.stderr.strip() if r else 'no etcd'})"

    def vip_back_to_a(self):
        """After a takeover's hook moved the service address to B: back on A, for a fresh pair."""
        subprocess.run(["ip", "-n", self.b, "addr", "del", f"{self.vip}/24", "dev", rp.DEV], capture_output=True)
        cs._ip("-n", self.a, "addr", "replace", f"{self.vip}/24", "dev", rp.DEV)
        cs._ip("-n", self.c, "neigh", "flush", "all")

    # -- partitions: DROP both ways in the namespace of the host cut off

    def drop(self, host, others):
        """DROP, both ways, between HOST and OTHERS: one iptables-restore, so the cut is one moment."""
        ips = ",".join(self.addr[o] for o in others)
        rules = f"*filter\n-I INPUT -s {ips} -j DROP\n-I OUTPUT -d {ips} -j DROP\nCOMMIT\n"
        subprocess.run(cs.netns_prefix(host) + ["iptables-restore", "--noflush"], input=rules, text=True,
                       check=True, capture_output=True, timeout=30)

    def undrop(self, host):
        for chain in ("INPUT", "OUTPUT"):
            subprocess.run(cs.netns_prefix(host) + ["iptables", "-F", chain], check=True,
                           capture_output=True, timeout=30)


# ---------------------------------------------------------------- helpers

def deploy(topo, certs, binary, witness=True, **keys):
    service = dict(TIMING, **keys)
    if witness:
        service.update(witness=topo.urls(), witness_ttl_ms=TTL_MS)
    dep = rp.Deployment(topo, certs, binary, **service)
    dep.write_primary_conf(extra=f"metrics_listen = 127.0.0.1:{METRICS_PORT}")
    return dep


def up(topo, certs, binary, **kw):
    dep = deploy(topo, certs, binary, **kw)
    backup = dep.start_backupd()
    primary = dep.start_primaryd()
    service = rp.service_proc(primary, binary)
    vip = dep.vip_client()
    cs.wait_serving(vip, service)
    rp.wait_acked(primary, backup, at_least=1)
    return dep, backup, primary, service, vip


def fields(daemon):
    return {name: v for svc, _, name, unit, v in rp.status_socket_rows(daemon.socket) if svc == rp.SERVICE}


def metrics_text(topo):
    with cs.in_netns(topo.a):
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as resp:
            return resp.read().decode()


def metric(topo, name):
    text = metrics_text(topo)
    m = re.search(r'^' + name + r'\{service="kvserver"[^}]*\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def last_status(daemon):
    s = daemon.notify.saw("STATUS=")
    return s[-1] if s else ""


def acks(prober, since=0, until=None):
    return [a for a in list(prober.attempts) if a[2] and a[0] >= since and (until is None or a[0] <= until)]


def max_gap_ms(prober, t0, t1):
    """The longest time between acknowledged writes of PROBER within [t0, t1] (ms),
    t0 and t1 counting as acknowledgements."""
    times = [t0] + [a[1] for a in acks(prober, t0, t1)] + [t1]
    return max(b - a for a, b in zip(times, times[1:])) * 1000


def kill_host_b(topo, backup):
    backup.kill9()
    topo.cut(topo.b)


# ---------------------------------------------------------------- backup loss

def backup_loss(r, binary):
    with WitnessTopology(1) as topo:
        topo.start_etcd()
        certs = rp.make_certs(topo.addr[topo.b])
        dep, backup, primary, service, vip = up(topo, certs, binary)
        rp.wait_for("A holding the witness's key", lambda: fields(primary).get("witness_held") == 1, 10)
        r.check("backup-loss: the key's value names A", topo.owner() == "primary.test", "primary.test",
                topo.owner())
        w = rp.Prober(vip, "w")
        w.start()
        time.sleep(1)
        t_kill = time.monotonic()
        kill_host_b(topo, backup)
        time.sleep(4)
        t_end = time.monotonic()
        gap = max_gap_ms(w, t_kill, t_end)
        n = len(acks(w, t_kill + 1))
        r.check(f"backup-loss: with a witness A acknowledges writes all through the 4 s after host B died "
                f"(longest gap {gap:.0f} ms, {n} writes from 1 s after)", gap < 1000 and n > 20,
                "no gap over 1000 ms, writes acknowledged", f"gap {gap:.0f} ms, {n} writes; A's log:\n"
                f"{primary.log_tail(1500)}")
        f = fields(primary)
        st = last_status(primary)
        reason = metric(topo, "checksync_unprotected_reason")
        r.check("backup-loss: A says it is unprotected and why, in status, STATUS= and /metrics",
                f.get("protected") == 0 and "serving on without it" in str(f.get("unprotected"))
                and st.startswith("STATUS=UNPROTECTED: kvserver: ") and "without it" in st and reason == 8,
                "protected 0, reason 'backup not heard ... serving on without it', STATUS=UNPROTECTED, reason 8",
                f"protected {f.get('protected')}, unprotected {f.get('unprotected')!r}, {st!r}, metric {reason}")
        text = metrics_text(topo)
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                              timeout=30)
        r.check("backup-loss: /metrics with the witness's figures passes `promtool check metrics`",
                lint.returncode == 0 and not (lint.stdout + lint.stderr).strip()
                and "checksync_witness_held{" in text and "checksync_witness_lease_left_seconds{" in text,
                "exit 0, no output, checksync_witness_held and _lease_left_seconds present",
                f"exit {lint.returncode}: {(lint.stdout + lint.stderr).strip()[:500]}")
        r.check("backup-loss: A's role stays primary (not frozen)", f.get("witness_held") == 1
                and primary.status().get("role") == "primary", "primary, witness held",
                f"{primary.status().get('role')}, witness {f.get('witness')!r}")
        # The witness goes too: now A must freeze.
        t_etcd = time.monotonic()
        for p in topo.members.values():
            p.kill9()
        time.sleep(3.5)
        late = acks(w, t_etcd + 2.0)
        w.stop()
        r.check("backup-loss: once the witness is gone too, A freezes (no write acknowledged from 2 s on)",
                not late, "none", f"{len(late)} acknowledged, e.g. {late[:2]}")
        f = fields(primary)
        r.check("backup-loss: status says frozen", primary.status().get("role") == "frozen"
                and "frozen" in str(f.get("unprotected")), "role frozen", f"{primary.status()['raw'][:300]}")
        primary.kill9()


def backup_loss_no_witness(r, binary, fence):
    tag = "backup-loss-fence" if fence else "backup-loss-freeze"
    with WitnessTopology(0) as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        keys = {}
        if fence:
            keys = dict(fence_rc=1, on_backup_loss="continue")
        dep, backup, primary, service, vip = up(topo, certs, binary, witness=False, **keys)
        w = rp.Prober(vip, "w")
        w.start()
        time.sleep(1)
        t_kill = time.monotonic()
        kill_host_b(topo, backup)
        time.sleep(4)
        w.stop()
        late = acks(w, t_kill + 1.5)
        role = primary.status().get("role")
        f = fields(primary)
        if fence:
            gap = max_gap_ms(w, t_kill, t_kill + 4)
            r.check(f"{tag}: on_backup_loss = continue (fence hook): A serves on (longest gap {gap:.0f} ms)",
                    gap < 1000 and role == "primary", "no gap over 1 s, role primary",
                    f"gap {gap:.0f} ms, role {role}")
            r.check(f"{tag}: and says unprotected", f.get("protected") == 0
                    and "fence hook" in str(f.get("unprotected")), "reason naming the fence hook",
                    f.get("unprotected"))
        else:
            r.check(f"{tag}: no witness, default policy freeze: A is frozen from 1.5 s after B died",
                    not late and role == "frozen", "no write acknowledged, role frozen",
                    f"{len(late)} acknowledged, role {role}")
        primary.kill9()


def handover(r, binary):
    """A planned handover with a witness: A revokes its lease, B takes the key, then restores."""
    with WitnessTopology(1) as topo:
        topo.start_etcd()
        certs = rp.make_certs(topo.addr[topo.b])
        dep, backup, primary, service, vip = up(topo, certs, binary)
        rp.wait_for("A holding the witness's key", lambda: fields(primary).get("witness_held") == 1, 10)
        keys = cs.kv_write(vip, "h", 20, "t")
        t0 = time.monotonic()
        res = cs.run_engine([cs.primaryd(), "handover", rp.SERVICE, "--config", dep.primary_conf], topo.a,
                            timeout=30)
        took = (time.monotonic() - t0) * 1000
        r.check(f"handover: the command succeeds with a witness ({took:.0f} ms)",
                res.rc == 0 and "handed over" in res.stdout, "exit 0, 'handed over'",
                f"exit {res.rc}: {res.stdout.strip()} {res.stderr.strip()}; B's log:\n{backup.log_tail(1000)}")
        rp.wait_for("B serving", lambda: backup.status().get("role") == "serving", 10, 0.1)
        r.check("handover: the key is B's", topo.owner() == "backup.test", "backup.test", topo.owner())
        problems = cs.kv_check(dep.client_to(topo.b), keys)
        r.check("handover: B serves every write made before it", not problems, "all", cs.summarize(problems))
        primary.kill9()
        backup.kill9()


def leaf_cert(certs, name, san, eku):
    """A certificate NAME signed by the test's CA (rp.make_certs's), with SAN and EKU: (crt, key)."""
    env = dict(os.environ, SAN=san, EKU=eku)
    for args in (["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key"],
                 ["req", "-new", "-config", "cnf", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out",
                  f"{name}.csr"],
                 ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                  "-days", "2", "-extfile", "cnf", "-extensions", "v3_leaf", "-out", f"{name}.crt"]):
        subprocess.run(["openssl", *args], cwd=certs.dir, env=env, check=True, capture_output=True, timeout=60)
    os.chmod(os.path.join(certs.dir, f"{name}.key"), 0o600)
    return os.path.join(certs.dir, f"{name}.crt"), os.path.join(certs.dir, f"{name}.key")


def tls(r, binary):
    """The witness over TLS with client certificates: etcd asks for one (--client-cert-auth)."""
    with WitnessTopology(1) as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        e1 = topo.etcd[0]
        # etcd's gateway dials etcd's own gRPC with this certificate: it needs clientAuth too
        server = leaf_cert(certs, "etcd-server", f"IP:{topo.addr[e1]}", "serverAuth, clientAuth")
        client = leaf_cert(certs, "witness-client", "DNS:witness-client.test", "clientAuth")
        topo.etcdctl_tls = ("--cacert", certs.ca, "--cert", client[0], "--key", client[1])
        topo.start_etcd(tls=(certs.ca, *server))
        dep, backup, primary, service, vip = up(topo, certs, binary, witness_ca=certs.ca,
                                                witness_cert=client[0], witness_key=client[1])
        rp.wait_for("A holding the witness's key over https", lambda: fields(primary).get("witness_held") == 1, 10)
        r.check("tls: A holds the key over https with its client certificate", topo.owner() == "primary.test",
                "primary.test", topo.owner())
        w = rp.Prober(vip, "w")
        w.start()
        time.sleep(1)
        t_kill = time.monotonic()
        kill_host_b(topo, backup)
        time.sleep(3)
        w.stop()
        gap = max_gap_ms(w, t_kill, t_kill + 3)
        r.check(f"tls: host B died, A serves on the witness's key (longest gap {gap:.0f} ms)",
                gap < 1000 and primary.status().get("role") == "primary", "no gap over 1 s, role primary",
                f"gap {gap:.0f} ms, role {primary.status().get('role')}")
        primary.kill9()


def restart(r, binary):
    """kill -9 of primaryd and its restart with a witness: the fresh primary finds B holding the
    image of the run that died; B takes over once the dead run's lease on the key has expired."""
    with WitnessTopology(1) as topo:
        topo.start_etcd()
        certs = rp.make_certs(topo.addr[topo.b])
        dep, backup, primary, service, vip = up(topo, certs, binary)
        rp.wait_for("A holding the witness's key", lambda: fields(primary).get("witness_held") == 1, 10)
        keys = cs.kv_write(vip, "r", 20, "t")
        time.sleep(0.5)  # a few epochs: the writes are acknowledged
        t0 = rp.kill_now(primary.proc)
        service.wait_gone()
        primary2 = dep.start_primaryd()
        rp.wait_for("B serving", lambda: backup.status().get("role") == "serving", 15, 0.1)
        took = (time.monotonic() - t0) * 1000
        r.check(f"restart: B took over after primaryd's kill -9 and restart ({took:.0f} ms)", True)
        r.check("restart: the key is B's", topo.owner() == "backup.test", "backup.test", topo.owner())
        rp.wait_for("A deposed", lambda: primary2.status().get("role") == "deposed", 10, 0.1)
        r.check("restart: A started no second copy", not rp.running_in(topo, topo.a, binary), "none",
                rp.running_in(topo, topo.a, binary))
        problems = cs.kv_check(dep.client_to(topo.b), keys)
        r.check("restart: B serves every write made before", not problems, "all", cs.summarize(problems))
        primary2.kill9()
        backup.kill9()


# ---------------------------------------------------------------- partitions

def takeover_parts(blog):
    """Where B's time to serve went, from its log: the silence it acted on (failover
    timeout plus up to a tick) and the restore (till the restored process runs); the rest
    of the time to B's first acknowledgement is the prober's and the cut's."""
    silence = re.findall(r"nothing heard from the primary for (\d+) ms", blog)
    restore = re.findall(r"took over service \S+: restored pid \d+ from epoch \d+ in (\d+) ms", blog)
    return (f"B acted after {silence[-1] if silence else '?'} ms of silence and restored in "
            f"{restore[-1] if restore else '?'} ms")


def kill_pair(topo, binary, primary, backup):
    """Both daemons and every copy of the service in A and B, for a fresh pair."""
    primary.kill9()
    backup.kill9()
    for p in rp.running_in(topo, topo.b, binary) + rp.running_in(topo, topo.a, binary):
        cs.Proc(p, "kvserver").kill9()


def one_cut(r, topo, kind, dep, backup, primary, pa, pb, rnd):
    tag = f"partition {kind} #{rnd}"
    a, b, etcd = topo.a, topo.b, topo.etcd
    cuts = {"A|B": [(a, [b])], "A|etcd": [(a, etcd)], "B|etcd": [(b, etcd)], "A|(B+etcd)": [(a, [b] + etcd)]}[kind]
    for host, others in cuts:
        topo.drop(host, others)
    t_cut = time.monotonic()  # the rules are in place: cut from here
    time.sleep(CUT_S)
    t_heal = time.monotonic()
    budget = TIMING["failover_timeout_ms"] + SLACK_MS
    b_acks = acks(pb)
    if b_acks:
        first_b = min(x[1] for x in b_acks)
        both = [x for x in acks(pa) if x[0] > first_b]
        r.check(f"{tag}: never two copies answering", not both, "no write acknowledged by A after B's first",
                f"{len(both)}, e.g. {both[:2]}")
    if kind == "A|(B+etcd)":
        first = min((x[1] for x in b_acks), default=None)
        took = (first - t_cut) * 1000 if first else None
        parts = takeover_parts(backup.log_text())
        r.check(f"{tag}: B, which holds the key, serves within {budget} ms of the cut "
                f"({took if took is None else round(took)} ms)", took is not None and took <= budget,
                f"<= {budget} ms", f"{took} ms ({parts}); key owner {topo.owner()}; B's log:\n"
                f"{backup.log_tail(1200)}")
        cs.log(f"{tag}: {parts}")
        r.check(f"{tag}: the key is B's", topo.owner() == "backup.test", "backup.test", topo.owner())
        for host, _ in cuts:
            topo.undrop(host)
        return took
    gap = max_gap_ms(pa, t_cut, t_heal)
    r.check(f"{tag}: A, which holds the key, serves all along (longest gap {gap:.0f} ms)", gap <= budget,
            f"<= {budget} ms", f"{gap:.0f} ms; A's log:\n{primary.log_tail(1200)}")
    r.check(f"{tag}: B restored nothing", not b_acks and backup.status().get("role") == "backup",
            "no answer from B, role backup", f"{len(b_acks)} answers, role {backup.status().get('role')}")
    for host, _ in cuts:
        topo.undrop(host)
    # healed: A protected again before the next cut
    rp.wait_for(f"{tag}: A protected again after the heal", lambda: fields(primary).get("protected") == 1, 20, 0.1)
    return gap


def partitions(r, binary, rounds):
    kinds = ["A|B", "A|etcd", "B|etcd"]
    results = {k: [] for k in kinds + ["A|(B+etcd)"]}
    with WitnessTopology(3) as topo:
        topo.start_etcd()
        certs = rp.make_certs(topo.addr[topo.b])
        t_up = time.monotonic()
        dep, backup, primary, service, vip = up(topo, certs, binary)
        # a backupd takes nothing over for silence in its first two failover timeouts (failover.c)
        time.sleep(max(0.0, t_up + 2 * TIMING["failover_timeout_ms"] / 1000 + 0.5 - time.monotonic()))
        for rnd in range(1, rounds + 1):
            for kind in kinds:
                rp.wait_for("A holding the key", lambda: fields(primary).get("witness_held") == 1, 10, 0.1)
                with rp.Probing(a=dep.client_to(topo.a), b=dep.client_to(topo.b)) as (pa, pb):
                    results[kind].append(one_cut(r, topo, kind, dep, backup, primary, pa, pb, rnd))
        kill_pair(topo, binary, primary, backup)
        for rnd in range(1, rounds + 1):
            topo.etcdctl("del", f"/checksync/{rp.SERVICE}/owner")
            topo.vip_back_to_a()
            t_up = time.monotonic()
            dep, backup, primary, service, vip = up(topo, certs, binary)
            rp.wait_for("A holding the key", lambda: fields(primary).get("witness_held") == 1, 10, 0.1)
            # a backupd takes nothing over for silence in its first two failover timeouts (failover.c)
            time.sleep(max(0.0, t_up + 2 * TIMING["failover_timeout_ms"] / 1000 + 0.5 - time.monotonic()))
            with rp.Probing(a=dep.client_to(topo.a), b=dep.client_to(topo.b)) as (pa, pb):
                results["A|(B+etcd)"].append(one_cut(r, topo, "A|(B+etcd)", dep, backup, primary, pa, pb, rnd))
                # healed: A hears that B took over and kills its frozen copy
                rp.wait_for("A deposed after the heal", lambda: primary.status().get("role") == "deposed", 20, 0.2)
                r.check(f"partition A|(B+etcd) #{rnd}: A's copy is gone once it hears B",
                        not rp.running_in(topo, topo.a, binary), "none", rp.running_in(topo, topo.a, binary))
            kill_pair(topo, binary, primary, backup)
    for k, v in results.items():
        cs.log(f"{k}: {'gap in A' if k != 'A|(B+etcd)' else 'B served after'}: "
               f"{rp.stats([x for x in v if x is not None])}")


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    if what in ("all", "backup-loss"):
        backup_loss(r, binary)
    if what in ("all", "backup-loss-freeze"):
        backup_loss_no_witness(r, binary, fence=False)
    if what in ("all", "backup-loss-fence"):
        backup_loss_no_witness(r, binary, fence=True)
    if what in ("all", "tls"):
        tls(r, binary)
    if what in ("all", "restart"):
        restart(r, binary)
    if what in ("all", "handover"):
        handover(r, binary)
    if what in ("all", "partitions"):
        partitions(r, binary, rounds)


if __name__ == "__main__":
    cs.run(main)
