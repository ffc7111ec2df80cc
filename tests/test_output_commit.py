#!/usr/bin/env python3
"""Output commit: with output_commit = on, a failover loses no acknowledged write.

Usage: test_output_commit.py SCENARIO [ROUNDS]

  on           ROUNDS (default 20) failover rounds with output_commit = on: a
               client in C writes k0, k1, ... one at a time through the VIP;
               after 1 to 3 s, primaryd and the service on A are killed with
               SIGKILL together. Asserted: EVERY write the client saw
               acknowledged, however shortly before the kill, is on B with its
               value (besides everything test_failover.py checks of a
               takeover: replication.check_takeover); primaryd's status said
               output_commit 1 and had released packets.
  off          the same with output_commit = off (default ROUNDS 5): the count
               of acknowledged writes lost per round is reported, not
               asserted (it is one epoch's worth, and may be 0).
  loopback     output_commit = on, and a second client on host A itself
               (127.0.0.1:8080 inside A) writes L0, L1, ...; every write it saw
               acknowledged must be on B too (default ROUNDS 3).
  reconnect    output_commit = on, and before A is killed, backupd is killed
               with SIGKILL and restarted: the epochs sent on the lost link are
               never acknowledged; what they hold must be let go by the full
               epoch after the reconnect (writes go on), and still no
               acknowledged write is lost (default ROUNDS 3).
  unplugged    as loopback, but once replication runs the test deletes the
               jump to primaryd's chain from A's OUTPUT (the plug is gone, the
               configuration still says on). Expected to FAIL: it shows that
               the zero-loss checks above catch a missing plug.
  setup-fails  the first netfilter queue number primaryd would bind in A is
               taken beforehand by the test (as by another service): it must
               bind the next one. Then all of them are taken: primaryd must
               still guard the service,
               log that output commit is NOT in force and why, and show
               output_commit -1 in status (never silently unheld).
  half-rules   primaryd runs where ip6tables fails (a mount namespace whose
               /usr/sbin/ip6tables exits 1) after its IPv4 chain is made: it
               must take that chain back out, say so, and serve.
  dialout      output_commit = on: the client writes through the VIP with
               /push, which makes the service tell a recorder in C of each
               write on a connection the service dials itself (a webhook),
               from a port no epoch has seen (500 ms epochs, so that most
               kills find a told write still waiting for its epoch). Every
               line the recorder was told, before or after the kill, must be
               a write B holds: the
               service's own connections are held like its replies (default
               ROUNDS 3). With output_commit = off (dialout-off) the count of
               lines told for writes B lacks is reported.
  handover     SIGTERM to primaryd with output commit in force while the client
               writes (a planned handover): every write acknowledged before it
               is on B, and no chain or rule of primaryd's is left in A. (The
               "on" rounds check the reverse for kill -9: the rules stay, so
               what was held, and what the dying sockets still send, is
               dropped, not sent.)

Per round the topology, daemons and certificates are fresh (replication.py).
Printed at the end: acknowledged writes lost per round, and how long before
the kill the latest lost one was acknowledged (negative: A answered it after
the SIGKILL was sent, while it died; it counts, the client saw it succeed).
"""

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

BUDGET_S = 820  # start no round after this (meson's timeout is 900 s)
DEFAULT_ROUNDS = {"on": 20, "off": 5, "dialout": 3, "dialout-off": 3, "loopback": 3, "reconnect": 3, "unplugged": 3, "setup-fails": 1,
                  "half-rules": 1, "handover": 1}
QUEUE_FIRST, QUEUE_TRIES = 17200, 64  # primaryd/outcommit.c


class SetupFailed(Exception):
    """The round never got to the kill: later rounds would fail the same way."""


def gauge(daemon, name):
    """One figure of kvserver from DAEMON's status socket (None if it has no such row)."""
    for svc, _, n, _, value in rp.status_socket_rows(daemon.socket):
        if svc == rp.SERVICE and n == name:
            return value
    return None


def xtables(ns, *args):
    out = []
    for cmd in ("iptables", "ip6tables"):
        r = subprocess.run(["ip", "netns", "exec", ns, cmd, "-w", "-t", "mangle", *args],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise cs.TestError(f"{cmd} -t mangle {' '.join(args)} in {ns}: {r.stderr.strip()}")
        out.append(r.stdout)
    return out


def our_chains(topo):
    """The CHECKSYNC-OC- chains in A's mangle table (IPv4 and IPv6), and the jumps to them."""
    return [f"{fam}: {l}" for fam, out in zip(("IPv4", "IPv6"), xtables(topo.a, "-S"))
            for l in out.splitlines() if "CHECKSYNC-OC-" in l]


def unplug(topo):
    """Deletes the jump from OUTPUT to primaryd's chain in A, in both tables; the chain's name."""
    chains = sorted({l.split()[-1] for l in xtables(topo.a, "-S", "OUTPUT")[0].splitlines()
                     if "CHECKSYNC-OC-" in l})
    if len(chains) != 1:
        raise cs.TestError(f"expected one CHECKSYNC-OC- chain jumped to from OUTPUT in A, saw {chains}")
    xtables(topo.a, "-D", "OUTPUT", "-j", chains[0])
    return chains[0]


def lost_writes(writer, items, t_kill):
    """[(key, ms before the kill it was acknowledged)] of WRITER's acknowledged writes (sent to A)
    that ITEMS (B's /items) lacks or holds with another value."""
    with writer.lock:
        acks = list(writer.acks)
    return [(writer.key(i), (t_kill - t) * 1000) for i, p, t in acks
            if p == 0 and items.get(writer.key(i)) != writer.value(i)]


def one_round(r, n, scenario, binary, certs, net):
    tag = f"round {n}"
    oc = "off" if scenario == "off" else "on"
    with rp.Topology(net) as topo:
        try:
            up = rp.bring_up(topo, certs, binary, output_commit=oc)
        except cs.TestError as e:
            raise SetupFailed(f"{tag}: setup: {e}")
        cs.log(f"{tag}: {topo}; service pid {up.service.pid}, output_commit = {oc}")
        r.check(f"{tag}: primaryd status says output_commit {1 if oc == 'on' else 0}",
                gauge(up.primary, "output_commit") == (1 if oc == "on" else 0),
                1 if oc == "on" else 0, gauge(up.primary, "output_commit"))
        if scenario == "unplugged":
            cs.log(f"{tag}: deleted the jump to {unplug(topo)} from A's OUTPUT: the plug is gone")

        writers = [rp.Writer(up.vip, prefix="k")]
        if scenario in ("loopback", "unplugged"):
            writers.append(rp.Writer(cs.Client("127.0.0.1", rp.PORT, netns=topo.a), prefix="L"))
        t_first = time.monotonic()
        for w in writers:
            w.start()
        try:
            for w in writers:
                w.wait_acks(20, timeout=60)
            if scenario == "reconnect":
                up = reconnect(r, tag, up, writers[0])
            # The kill lands 1 to 3 s after the first write (20 acknowledged at least, each
            # waiting for its epoch under output commit, take most of that), and never right
            # on an acknowledgement: a random part of an epoch after the wait.
            time.sleep(max(t_first + random.uniform(1.0, 3.0) - time.monotonic(),
                           random.uniform(0.0, 0.3)))
            released = gauge(up.primary, "output_released_packets")
            held = gauge(up.primary, "output_held_packets")
            t_kill = rp.kill_now(up.service, up.primary.proc)
            writers[0].phase = 1  # A is gone: an answer to a write sent from now on comes from B
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)
        except BaseException:
            for w in writers:
                w.stop()
            raise
        for w in writers[1:]:
            w.stop()  # on A's loopback: nothing to reach any more
        if oc == "on":
            chains = our_chains(topo)
            r.check(f"{tag}: A's rules outlive primaryd's kill -9 (what it held is dropped, not sent)",
                    chains, "a CHECKSYNC-OC- chain still jumped to from OUTPUT", chains)
        if oc == "on":
            r.check(f"{tag}: primaryd had let packets go as their epochs were acknowledged",
                    (released or 0) > 0, "output_released_packets > 0", released)
        cs.log(f"{tag}: killed A after {', '.join(f'{len(w.acked(phase=0))} {w.prefix}-writes' for w in writers)}; "
               f"primaryd held {held} packets, had released {released}")
        failover_ms = rp.check_takeover(r, tag, up, writers[0], t_kill)
        items = up.vip.json("/items", timeout=60)
    lost = {}
    for w in writers:
        where = "through the VIP" if w.prefix == "k" else "on A's loopback"
        lost[w.prefix] = lost_writes(w, items, t_kill)
        latest = min((ms for _, ms in lost[w.prefix]), default=None)
        cs.log(f"{tag}: {len(lost[w.prefix])} of {len(w.acked(phase=0))} writes acknowledged {where} "
               f"are not on B" + (f" (the latest acknowledged {latest:.0f} ms before the kill)"
                                  if latest is not None else ""))
        if oc == "on":
            r.check(f"{tag}: every write acknowledged {where} before the kill is on B, however recent",
                    not lost[w.prefix], "none lost",
                    cs.summarize([f"{k} (acked {ms:.0f} ms before the kill)" for k, ms in lost[w.prefix]]))
    return failover_ms, lost


class Recorder:
    """A TCP server in network namespace NS on ADDR: {key: value} of every line K=V it
    was told (a webhook's receiver), in a thread of its own."""

    def __init__(self, ns, addr):
        with cs.in_netns(ns):
            self.sock = socket.socket()
            self.sock.bind((addr, 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.to = f"{addr}:{self.sock.getsockname()[1]}"
        self.told, self.running = {}, True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(5)
            data = b""
            try:
                while chunk := c.recv(4096):
                    data += chunk
            except OSError:
                pass
            c.close()
            for line in data.decode(errors="replace").splitlines():
                k, _, v = line.partition("=")
                self.told[k] = v

    def stop(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()


class PushWriter(rp.Writer):
    """rp.Writer through /push: each write is also told to TO by the service itself."""

    def __init__(self, client, to, **kw):
        super().__init__(client, prefix="p", **kw)
        self.to = to

    def step(self):
        i, phase = self.next, self.phase
        status, body = self.client.get("/push", {"k": self.key(i), "v": self.value(i), "to": self.to},
                                       timeout=5)
        if status != 200 or not body.get("ok"):
            raise cs.TestError(f"/push {self.key(i)}: status {status} {body}")
        with self.lock:
            self.acks.append((i, phase, time.monotonic()))
        self.next = i + 1


def served_items(client):
    try:
        return client.json("/items", timeout=2)
    except cs.TestError:
        return None


def dialout_round(r, n, scenario, binary, certs, net):
    tag = f"dialout round {n}"
    oc = "off" if scenario == "dialout-off" else "on"
    with rp.Topology(net) as topo:
        try:
            # Long epochs: a write told of is then mostly waiting for its epoch when A dies.
            up = rp.bring_up(topo, certs, binary, output_commit=oc, epoch_interval_ms=500)
        except cs.TestError as e:
            raise SetupFailed(f"{tag}: setup: {e}")
        want = 1 if oc == "on" else 0
        r.check(f"{tag}: primaryd status says output_commit {want}",
                gauge(up.primary, "output_commit") == want, want, gauge(up.primary, "output_commit"))
        rec = Recorder(topo.c, topo.addr[topo.c])
        writer = PushWriter(up.vip, rec.to)
        writer.start()
        try:
            writer.wait_acks(10, timeout=60)
            time.sleep(random.uniform(1.0, 3.0))
            t_kill = rp.kill_now(up.service, up.primary.proc)
            # No retry on B of the write in flight: B's answer is then the image alone.
            writer.stop()
            up.primary.proc.wait_gone(5)
            items = rp.wait_for("B serving through the VIP",
                                lambda: served_items(up.vip), 60, 0.1)
        finally:
            writer.stop()
            time.sleep(0.5)  # the last lines on their way
            rec.stop()
    told = {k: v for k, v in rec.told.items() if k.startswith("p")}
    wrong = sorted(k for k, v in told.items() if items.get(k) != v)
    acked = writer.acked()
    lost = [k for k, v in acked.items() if items.get(k) != v]
    cs.log(f"{tag}: output_commit {oc}; the recorder was told {len(told)} writes, {len(wrong)} of "
           f"them not on B ({wrong[:5]}); {len(lost)} of {len(acked)} writes acknowledged before "
           f"the kill not on B")
    if oc == "on":
        r.check(f"{tag}: every write the service told the recorder of (on connections it "
                f"dialled itself) is on B ({len(told)} told)", told and not wrong,
                "some told, none missing on B", f"{len(told)} told, missing on B: {wrong[:10]}")
        r.check(f"{tag}: every write acknowledged before the kill is on B ({len(acked)})",
                not lost, "none lost", cs.summarize(lost))
    return len(wrong)


def dialout(r, scenario, rounds, binary, certs, net):
    counts = []
    for n in range(1, rounds + 1):
        try:
            counts.append(dialout_round(r, n, scenario, binary, certs, net))
        except (cs.TestError, SetupFailed) as e:
            r.fail(str(e))
    cs.log(f"{scenario}: writes told by the service but missing on B, per round: {counts}")


def reconnect(r, tag, up, writer):
    """SIGKILL of backupd and a restart on its state dir: the link drops, epochs sent on it go
    unacknowledged (their marks wait), the primary reconnects with a full epoch whose ACK must
    let them go. Returns UP with the new backupd."""
    acked = up.primary.field("acked")
    up.backup.proc.kill9()
    n = len(writer.acked())
    time.sleep(0.2)
    up = up._replace(backup=up.dep.start_backupd())
    rp.wait_acked(up.primary, up.backup, at_least=acked + 1)
    writer.wait_acks(n + 20, timeout=60)
    r.check(f"{tag}: writes go on after backupd's restart (held output let go on the new link)",
            len(writer.acked()) >= n + 20, f">= {n + 20}", len(writer.acked()))
    return up


def bind_queues(ns, count=QUEUE_TRIES):
    """Binds the first COUNT queue numbers primaryd tries, from a netlink socket of ours in NS
    (as another service's primaryd would); the socket."""
    with cs.in_netns(ns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    s.bind((0, 0))
    for seq, q in enumerate(range(QUEUE_FIRST, QUEUE_FIRST + count), 1):
        body = struct.pack("BBH", 0, 0, socket.htons(q))  # nfgenmsg, res_id = queue
        body += struct.pack("HHBBH", 8, 1, 1, 0, 0)  # NFQA_CFG_CMD: NFQNL_CFG_CMD_BIND
        msg = struct.pack("IHHII", 16 + len(body), (3 << 8) | 2, 1 | 4, seq, 0) + body
        s.send(msg)  # NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG; NLM_F_REQUEST | NLM_F_ACK
        err = struct.unpack_from("i", s.recv(4096), 16)[0]
        if err:
            raise cs.TestError(f"binding queue {q} in {ns}: {os.strerror(-err)}")
    return s


def setup_fails(r, binary, certs, net):
    with rp.Topology(net) as topo:  # the first queue number is taken: primaryd takes the next
        holder = bind_queues(topo.a, 1)
        try:
            up = rp.bring_up(topo, certs, binary, output_commit="on")
            r.check("with queue 17200 taken by another socket, output commit is in force",
                    gauge(up.primary, "output_commit") == 1, 1, f"{gauge(up.primary, 'output_commit')}; "
                    f"log: {up.primary.log_tail(600)}")
            rules = our_chains(topo)
            r.check("its rules send the service's packets to the next queue, 17201",
                    any("--queue-num 17201" in l for l in rules), "--queue-num 17201", rules)
        finally:
            holder.close()
    with rp.Topology(net) as topo:  # all of them taken: it cannot be set up
        holder = bind_queues(topo.a)
        try:
            up = rp.bring_up(topo, certs, binary, output_commit="on")
            log = up.primary.log_text()
            line = next((l for l in log.splitlines() if "output commit is NOT in force" in l), None)
            r.check("primaryd logs that output commit is not in force, and why", line is not None
                    and "netfilter queue" in line, "a line '... output commit is NOT in force ...: "
                    "cannot bind a netfilter queue ...'", line or log[-1500:])
            r.check("primaryd status shows output_commit -1", gauge(up.primary, "output_commit") == -1,
                    -1, gauge(up.primary, "output_commit"))
            w = rp.Writer(up.vip)
            w.start()
            try:
                w.wait_acks(20)
            finally:
                w.stop()
            r.check("the service is still guarded and replicated", rp.wait_acked(up.primary, up.backup, 2),
                    "epoch 2 acknowledged", "no")
        finally:
            holder.close()


def handover(r, binary, certs, net):
    """SIGTERM to primaryd with output commit in force while a client writes: primaryd hands the
    service over (final epoch, its ACK lets everything it holds go), B serves at once with every
    acknowledged write, and no chain or rule of primaryd's is left in A."""
    with rp.Topology(net) as topo:
        up = rp.bring_up(topo, certs, binary, output_commit="on")
        w = rp.Writer(up.vip)
        w.start()
        try:
            w.wait_acks(20)
            before = our_chains(topo)
            r.check("while it runs, primaryd's chain is in A's OUTPUT (IPv4 and IPv6)",
                    sum("-A OUTPUT -j CHECKSYNC-OC-" in l for l in before) == 2, "two jumps", before)
            time.sleep(random.uniform(0.2, 0.8))
            os.kill(up.primary.pid, signal.SIGTERM)
            up.primary.proc.wait_gone(30)
            up.service.wait_gone(5)
            w.phase = 1
            w.wait_acks(10, phase=1, timeout=30)
        finally:
            w.stop()
        after = our_chains(topo)
        r.check("after the handover no CHECKSYNC-OC- chain or rule is left in A", not after, "none", after)
        log = up.primary.log_text()
        r.check("primaryd handed over (not a crash)", "handed over" in log, "'handed over' in its log",
                log[-800:])
        items = up.dep.client_to(topo.b).json("/items", timeout=30)
        acked = w.acked(phase=0)
        lost = [k for k, v in acked.items() if items.get(k) != v]
        r.check(f"every write acknowledged before the handover is on B ({len(acked)})", not lost,
                "none lost", cs.summarize(lost))


_BROKEN_IP6TABLES = """\
#!/bin/sh
# Written by test_output_commit.py: runs the real primaryd in a mount namespace
# of its own whose /usr/sbin/ip6tables always fails (every other tool there is
# the real one), to see what primaryd does when half of its rules cannot be made.
exec unshare -m --propagation private sh -c '
  set -e
  d="{tmp}"
  mkdir -p "$d/orig" "$d/sbin"
  mount --bind /usr/sbin "$d/orig"
  for f in "$d"/orig/*; do ln -sf "$f" "$d/sbin/${{f##*/}}"; done
  rm -f "$d/sbin/ip6tables"
  printf "#!/bin/sh\\necho ip6tables: broken by the test >&2\\nexit 1\\n" >"$d/sbin/ip6tables"
  chmod 755 "$d/sbin/ip6tables"
  mount --bind "$d/sbin" /usr/sbin
  if /usr/sbin/ip6tables -V >/dev/null 2>&1; then r=0; else r=$?; fi
  echo "ip6tables -V exits $r in pid $$" >>"$d/../broken.log"
  exec "$0" "$@"' {real} "$@"
"""


def half_rules(r, binary, certs, net):
    """ip6tables fails after the IPv4 chain is made: primaryd must take its IPv4 rules back out
    (not leave them holding what nobody releases), say so, and serve unheld."""
    tmp = cs.run_dir("broken-sbin")
    wrapper = os.path.join(tmp, "primaryd-broken-ip6tables")
    with open(wrapper, "w") as f:
        f.write(_BROKEN_IP6TABLES.format(tmp=os.path.join(tmp, "ns"), real=cs.primaryd()))
    os.chmod(wrapper, 0o755)
    with rp.Topology(net) as topo:
        dep = rp.Deployment(topo, certs, binary, output_commit="on")
        backup = dep.start_backupd()
        primary = rp.start_daemon("primaryd", wrapper, dep.primary_conf, topo.a, dep.path("a"),
                                  topo.sockdir, socket_path=dep.status_socket["a"])
        rp.wait_status(primary)
        try:
            with open(os.path.join(tmp, "broken.log")) as f:
                said = f.read().strip()
        except OSError:
            said = "no broken.log"
        if "exits 1 " not in said:
            raise cs.TestError(f"half-rules: could not break ip6tables for primaryd ({said})")
        service = rp.service_proc(primary, binary)
        cs.wait_serving(dep.vip_client(), service)
        rp.wait_acked(primary, backup, at_least=1)
        line = next((l for l in primary.log_text().splitlines() if "NOT in force" in l), None)
        r.check("with ip6tables failing, primaryd says output commit is not in force, naming it",
                line is not None and "ip6tables" in line, "'... NOT in force ...: `ip6tables ...` failed'",
                line or primary.log_tail(800))
        r.check("... and status shows output_commit -1", gauge(primary, "output_commit") == -1, -1,
                gauge(primary, "output_commit"))
        left = [l for l in our_chains(topo) if l.startswith("IPv4")]
        r.check("... and it took its IPv4 chain back out (nothing held that nobody releases)", not left,
                "no CHECKSYNC-OC- rule in A's IPv4 mangle table", left)
        w = rp.Writer(dep.vip_client())
        w.start()
        try:
            w.wait_acks(20, timeout=30)
        finally:
            w.stop()


def main(r, scenario, rounds=None):
    if scenario not in DEFAULT_ROUNDS:
        raise cs.TestError(f"unknown scenario {scenario!r}; expected one of {', '.join(DEFAULT_ROUNDS)}")
    rounds = int(rounds) if rounds else DEFAULT_ROUNDS[scenario]
    binary = cs.build_workload("kvserver", "cgo")
    net = random.randint(1, 254)  # one subnet for every round: the backup's certificate names its IP
    certs = rp.make_certs(f"10.213.{net}.2")
    if scenario == "setup-fails":
        return setup_fails(r, binary, certs, net)
    if scenario == "half-rules":
        return half_rules(r, binary, certs, net)
    if scenario == "handover":
        return handover(r, binary, certs, net)
    if scenario.startswith("dialout"):
        return dialout(r, scenario, rounds, binary, certs, net)
    t0 = time.monotonic()
    times, lost = [], []
    for n in range(1, rounds + 1):
        if time.monotonic() - t0 > BUDGET_S:
            r.fail(f"ran out of time: {n - 1} of {rounds} rounds done in {BUDGET_S}s")
            break
        try:
            ms, lw = one_round(r, n, scenario, binary, certs, net)
            times.append(ms)
            lost.append(lw)
        except SetupFailed as e:
            r.fail(str(e))
            r.fail(f"stopped after round {n} of {rounds}: the daemons did not get to replicating")
            break
        except cs.TestError as e:
            r.fail(str(e))
    for prefix in sorted({p for lw in lost for p in lw}):
        counts = [len(lw[prefix]) for lw in lost]
        recent = [min(ms for _, ms in lw[prefix]) for lw in lost if lw[prefix]]
        cs.log(f"{scenario}: {prefix}-writes acknowledged but lost per round: {counts} (total "
               f"{sum(counts)}); latest lost acked {rp.stats(recent)} before the kill")
    cs.log(f"kill -9 to first successful request on B, {len(times)} of {rounds} rounds: {rp.stats(times)}")


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
