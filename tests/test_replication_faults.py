#!/usr/bin/env python3
"""Replication faults, one scenario per argument (all of them without one).

Usage: test_replication_faults.py [SCENARIO ...]

Every scenario builds its own topology (tests/lib/replication.py: hosts A, B, C
and a switch, each a network namespace; kvserver protected by primaryd in A,
backupd in B, a client in C talking to the service address VIP):

  kill-primaryd  SIGKILL of primaryd alone: the service must die with it
                 within 1 s (PTRACE_O_EXITKILL) and B must take over with the
                 writes acknowledged well before the kill. Before the kill,
                 both daemons' status must show every field they promise.
  kill-backupd   SIGKILL of backupd while large epochs flow, then a restart on
                 the same state dir, three times: after each restart its
                 status must hold an epoch >= the last one the primary heard
                 acknowledged and >= the last one its own status showed
                 acknowledged just before the kill,
                 it must stay a backup (no takeover while A lives), and the
                 primary must reconnect and epochs advance again. Then A is
                 killed and B must take over with the data.
  torn-epoch     A's link cut while large epochs flow (A's uplink shaped to 8
                 Mbit/s, so that an epoch spends long on the wire), at a moment
                 backupd's status shows an epoch just begun (receiving_epoch,
                 receiving_pages < 256); after the cut an epoch must still be
                 unfinished there, the primary must have shipped more
                 than it heard acknowledged, and backupd, its connection ended
                 under it with ss -K, must log a torn epoch discarded (retried
                 until all three hold), backupd SIGKILLed before its failover timeout, link
                 restored, backupd restarted, three times: its epoch must lie
                 between the last the primary heard acknowledged and the last
                 it shipped, never a torn one, and replication must resume.
                 The final takeover's state must be one consistent moment.
  certs          primaries with the wrong identity are refused before any
                 image data: no client certificate (a Python TLS client), a
                 self-signed certificate, one from another CA, and one from
                 the right CA with the wrong name (the service file says
                 primary = primary.test). Each time backupd's status shows no
                 epoch, its state dir is unchanged, its log names A's address
                 and a reason. Then the right certificate replicates.
  partition      A and B parted by bridge port isolation while C reaches both;
                 C writes to A's and to B's own address all along. A must
                 freeze within its lease (its requests time out, it is not
                 dead), B must serve only after A's lease, A must acknowledge
                 no write once B serves, and must not come back when the
                 partition heals.
  partition-unplug  the same with A's veth taken out of the bridge: A is cut
                 off from everyone, so a client inside A polls A.
  fence          a fence hook that fails: after A dies B must not take over
                 (the hook is retried, no kvserver in B, no takeover hook);
                 once it succeeds B takes over, after the fence and with the
                 data, and the hook was given CHECKSYNC_SERVICE.
  bad-config     each daemon, given a file with an unknown key, a bad value or
                 an inconsistent pair, exits non-zero at once with one line on
                 stderr naming FILE:LINE, and starts nothing.
"""

import os
import random
import re
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

PRIMARYD, BACKUPD = "checksync-primaryd", "checksync-backupd"


def new_topology():
    """A fresh topology and certificates whose backup SAN is its B address."""
    topo = rp.Topology()
    return topo, rp.make_certs(f"10.213.{topo.net}.2")


# ---------------------------------------------------------------- kill-primaryd

PRIMARY_FIELDS = ("role", "epoch", "acked", "lag", "pause_p50_ms", "pause_p99_ms", "bytes_per_epoch",
                  "heartbeat_ms")
BACKUP_FIELDS = ("role", "epoch", "acked", "lag", "bytes_per_epoch", "heartbeat_ms", "pid")


def check_status_fields(r, daemon, fields, role):
    st = daemon.status()
    missing = [f for f in fields if f not in st]
    r.check(f"{daemon.kind} status shows {', '.join(fields)}", not missing, "all of them",
            f"no {', '.join(missing)} in:\n{st['raw']}")
    r.check(f"{daemon.kind} status role is {role}", st.get("role") == role, role, st.get("role"))
    return st


def kill_primaryd(r, binary):
    topo, certs = new_topology()
    with topo:
        up = rp.bring_up(topo, certs, binary)
        writer = rp.Writer(up.vip)
        writer.start()
        try:
            writer.wait_acks(200)
            time.sleep(0.5)  # writes old enough to be in an acknowledged epoch
            check_status_fields(r, up.primary, PRIMARY_FIELDS, "primary")
            check_status_fields(r, up.backup, BACKUP_FIELDS, "backup")
            t_kill = rp.kill_now(up.primary.proc)
            up.primary.proc.wait_gone(5)
            gone = None
            deadline = t_kill + 5
            while time.monotonic() < deadline:
                if not up.service.alive():
                    gone = time.monotonic() - t_kill
                    break
                time.sleep(0.005)
            r.check("the service died with primaryd (PTRACE_O_EXITKILL) within 1 s",
                    gone is not None and gone <= 1.0, "<= 1000 ms after primaryd's SIGKILL",
                    f"{gone * 1000:.0f} ms" if gone is not None else "still running after 5 s")
            if gone is None:
                up.service.kill9()  # so that the takeover below is tested at all
        except BaseException:
            writer.stop()
            raise
        rp.check_takeover(r, "kill-primaryd", up, writer, t_kill)


# ---------------------------------------------------------------- kill-backupd

def restart_backupd(up):
    backup = up.dep.start_backupd()
    return up._replace(backup=backup)


def kill_backupd(r, binary):
    topo, certs = new_topology()
    with topo:
        up = rp.bring_up(topo, certs, binary)
        writer, bulk = rp.Writer(up.vip), rp.BulkWriter(up.vip)
        writer.start()
        bulk.start()
        try:
            writer.wait_acks(50)
            rp.wait_acked(up.primary, up.backup, at_least=3)
            for it in range(1, 4):
                tag = f"kill-backupd {it}"
                time.sleep(random.uniform(0.3, 1.0))
                held = up.backup.field("acked")  # what it had acknowledged, so made durable
                up.backup.proc.kill9()
                p = up.primary.status()  # nothing can be acknowledged after the kill
                acked = p.get("acked")
                cs.log(f"{tag}: backupd SIGKILLed having acknowledged epoch {held}; primary: acked {acked}, "
                       f"epoch {p.get('epoch')}")
                up = restart_backupd(up)
                st = up.backup.status()
                r.check(f"{tag}: after its restart backupd holds an epoch >= the last acknowledged: the "
                        f"primary's {acked}, and the {held} backupd's status showed acknowledged before the kill",
                        isinstance(st.get("epoch"), int) and acked is not None and held is not None
                        and st["epoch"] >= max(acked, held), f">= {max(acked or 0, held or 0)}",
                        f"epoch {st.get('epoch')} in:\n{st['raw']}")
                check_resumes(r, tag, up, st.get("epoch") or 0, acked or 0)
            t_kill = rp.kill_now(up.service, up.primary.proc)
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)
        except BaseException:
            writer.stop()
            bulk.stop()
            raise
        rp.check_takeover(r, "kill-backupd takeover", up, writer, t_kill, others=[bulk])


def check_resumes(r, tag, up, held, acked, timeout=20):
    """The primary reconnects to the restarted backupd: both numbers move past where
    they were, and B stays a backup (A is alive: no takeover)."""
    try:
        pa, be = rp.wait_acked(up.primary, up.backup, at_least=max(held, acked) + 2, timeout=timeout)
        r.check(f"{tag}: the primary reconnected and epochs advance again", True)
        cs.log(f"{tag}: resumed, primary acked {pa}, backup holds {be}")
    except cs.TestError as e:
        r.fail(f"{tag}: expected the primary to reconnect and epochs to pass {max(held, acked) + 1} "
               f"within {timeout}s: {e}")
    st = up.backup.status()
    serving = rp.running_in(up.topo, up.topo.b, up.dep.binary)
    r.check(f"{tag}: B stays a backup while A lives", st.get("role") == "backup" and not serving,
            "role backup, no kvserver in B", f"role {st.get('role')}, kvserver pids in B {serving}")


# ---------------------------------------------------------------- torn-epoch

TEAR_TRIES = 30


def shape(topo, rate):
    """Limits A's outgoing traffic to RATE (tc tbf), or lifts the limit (None). The queue
    is kept short (50 ms): a long one would hold a reconnecting primary's SYN behind the
    dead connection's data after the link heals."""
    if rate is None:
        subprocess.run(["tc", "-n", topo.a, "qdisc", "del", "dev", rp.DEV, "root"], check=True)
    else:
        subprocess.run(["tc", "-n", topo.a, "qdisc", "add", "dev", rp.DEV, "root", "tbf", "rate", rate,
                        "burst", "64kb", "latency", "50ms"], check=True)


def primary_sees_close(up, closed_before, timeout=10):
    """Waits until primaryd has noticed that its link to the killed backupd is gone.
    A restarted backupd counts the primary's silence from its own start, and a primary
    that is still waiting on a TCP retransmission into the healed link may reconnect
    only after that count has run out; that race is not what this scenario is about."""
    rp.wait_for("primaryd to notice its link to the killed backupd closed",
                lambda: up.primary.log_text().count("link to backup") > closed_before, timeout)


def receiving(daemon):
    """(epoch, pages received so far) of the epoch backupd has begun and not committed, or
    None: its status socket, read directly (a status command would cost a process)."""
    rows = {n: v for _, _, n, _, v in rp.status_socket_rows(daemon.socket)}
    e, n = rows.get("receiving_epoch"), rows.get("receiving_pages")
    return (int(e), int(n)) if e is not None and n is not None else None


def tear_an_epoch(r, tag, up, failover_s):
    """Cuts A's link while an epoch is on the wire as the backup sees it: backupd has
    begun an epoch and received fewer than 256 of its pages (status receiving_epoch,
    receiving_pages). After the cut an epoch must still be unfinished at the backup (what
    was already in its socket may have completed it) and the primary must have shipped more than it
    heard acknowledged; then backupd's connection is ended under it (ss -K) and it must
    log the torn epoch discarded. After a miss backupd is restarted and it is tried again.
    Returns
    (up, acked, shipped) with the link still cut and backupd alive."""
    topo = up.topo
    for attempt in range(1, TEAR_TRIES + 1):
        # Early in an epoch, so that more of it is still to come than the cut leaves in
        # B's socket and A's queue.
        rx = rp.wait_for("backupd at the start of an epoch (begun, fewer than 256 pages in)",
                         lambda: (lambda x: x if x and x[1] < 256 else None)(receiving(up.backup)), 20, 0.005)
        torn_before = up.backup.log_text().count("torn epoch")
        topo.cut(topo.a)
        t_cut = time.monotonic()
        time.sleep(0.05)  # what was on its way when the link went down is in B's socket now
        still = receiving(up.backup)
        p = up.primary.status()
        acked, shipped = p.get("acked"), p.get("epoch")
        in_flight = (isinstance(acked, int) and isinstance(shipped, int) and shipped > acked
                     and still is not None)
        torn = False
        if in_flight:
            subprocess.run(cs.netns_prefix(topo.b) + ["ss", "-K", "sport", "=", str(rp.BACKUP_PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 0.3
            while up.backup.log_text().count("torn epoch") == torn_before and time.monotonic() < deadline:
                time.sleep(0.01)
            torn = up.backup.log_text().count("torn epoch") > torn_before
        cut_s = time.monotonic() - t_cut
        cs.log(f"{tag}: attempt {attempt}: backupd had {rx[1]} pages of epoch {rx[0]} at the cut, "
               f"{still} after it; primary shipped {shipped}, acked {acked}; torn line {torn}; "
               f"cut for {cut_s * 1000:.0f} ms so far")
        if in_flight and torn:
            r.check(f"{tag}: an epoch was torn at the cut (attempt {attempt}): backupd was receiving epoch "
                    f"{still[0]}, the primary had shipped {shipped} > acked {acked}, and backupd logged a torn "
                    f"epoch discarded", True)
            r.check(f"{tag}: the cut lasted less than the failover timeout before backupd is killed",
                    cut_s < failover_s, f"< {failover_s}s", f"{cut_s:.2f}s")
            r.check(f"{tag}: the cut parts A from B",
                    rp.reachable(topo.b, topo.addr[topo.a], timeout=0.2) == "unreachable",
                    "unreachable", "reachable")
            return up, acked, shipped
        # A miss: what was lost in the cut is retransmitted only after TCP's backoff, which
        # can outlast the failover timeout (a takeover). Start backupd afresh instead.
        closed_before = up.primary.log_text().count("link to backup")
        up.backup.proc.kill9()
        topo.heal(topo.a)
        primary_sees_close(up, closed_before)
        up = restart_backupd(up)
        rp.wait_acked(up.primary, up.backup, at_least=(shipped or 0) + 2)
    raise cs.TestError(f"{tag}: no epoch caught torn on the wire in {TEAR_TRIES} cuts")


def torn_epoch(r, binary):
    topo, certs = new_topology()
    with topo:
        up = rp.bring_up(topo, certs, binary)
        writer, bulk = rp.Writer(up.vip), rp.BulkWriter(up.vip)
        writer.start()
        bulk.start()
        failover_s = up.dep.service["failover_timeout_ms"] / 1000
        try:
            writer.wait_acks(50)
            rp.wait_acked(up.primary, up.backup, at_least=3)
            # A's uplink at 8 Mbit/s: the bulk writer's delta epochs (~100 kB) are on the
            # wire for ~100 ms each, so backupd is inside one most of the time. (Whole pages
            # would make them megabytes, and the last epoch before the takeover too old for
            # its check of the writes acknowledged well before the kill.)
            shape(topo, "8mbit")
            for it in range(1, 4):
                tag = f"torn-epoch {it}"
                closed_before = up.primary.log_text().count("link to backup")
                up, acked, shipped = tear_an_epoch(r, tag, up, failover_s)
                up.backup.proc.kill9()
                topo.heal(topo.a)
                primary_sees_close(up, closed_before)
                up = restart_backupd(up)
                st = up.backup.status()
                e = st.get("epoch")
                cs.log(f"{tag}: link cut, epoch torn and backupd killed; primary had heard epoch {acked} "
                       f"acknowledged and shipped {shipped}; restarted backupd holds {e}")
                ok = all(isinstance(x, int) for x in (e, acked, shipped)) and acked <= e <= shipped
                r.check(f"{tag}: after the restart backupd holds a whole epoch: at least the last the primary "
                        f"heard acknowledged, at most the last it shipped",
                        ok, f"{acked} <= epoch <= {shipped}", f"epoch {e} in:\n{st['raw']}")
                check_resumes(r, tag, up, e or 0, acked or 0)
            # Full speed for the takeover, whose check wants the lag of an unshaped link.
            shape(topo, None)
            p = up.primary.status()
            rp.wait_acked(up.primary, up.backup, at_least=(p.get("epoch") or 0) + 3)
            time.sleep(1.0)
            t_kill = rp.kill_now(up.service, up.primary.proc)
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)
        except BaseException:
            writer.stop()
            bulk.stop()
            raise
        rp.check_takeover(r, "torn-epoch takeover", up, writer, t_kill, others=[bulk])


# ---------------------------------------------------------------- certs

CERT_CASES = [  # what, Certs field, what the backup's log must give as the reason
    ("a self-signed certificate", "self_signed", r"self[- ]signed|verif|certificate"),
    ("a certificate from another CA", "other", r"issuer|unknown ca|verif|certificate"),
    ("the right CA but CN intruder.test (primary = primary.test)", "intruder", r"intruder|primary\.test|name|CN"),
]


def no_cert_client(topo, ca):
    """A TLS 1.3 client in A with no certificate: connects to backupd, offers a few
    bytes, and reports what came back ('data', or the error that ended it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(ca)
    with cs.in_netns(topo.a):
        raw = socket.socket()
    raw.settimeout(5)
    try:
        raw.connect((topo.addr[topo.b], rp.BACKUP_PORT))
        with ctx.wrap_socket(raw, server_hostname=topo.addr[topo.b]) as s:
            s.sendall(b"\x93\x01\x02\x03")
            data = s.recv(1024)
            return f"data {data!r}" if data else "closed by the backup (EOF)"
    except ssl.SSLError as e:
        return f"refused: {e.reason or e}"
    except OSError as e:
        return f"error: {e}"
    finally:
        raw.close()


def log_since(daemon, offset):
    return daemon.log_text()[offset:]


def expect_refused(r, what, up, log_from, baseline, reason_re, wait_s=3.0):
    """The backup shows no epoch, its state dir is as it was, its log names A and a reason."""
    time.sleep(wait_s)  # several connection attempts
    st = up.backup.status()
    r.check(f"certs, {what}: backupd status shows no epoch for {rp.SERVICE}", st.get("epoch") in (None, 0),
            "no epoch (absent, none or 0)", f"epoch {st.get('epoch')} in:\n{st['raw']}")
    now = up.dep.state_files("b")
    r.check(f"certs, {what}: nothing written to backupd's state dir", now == baseline, baseline, now)
    text = log_since(up.backup, log_from)
    a_ip = up.topo.addr[up.topo.a]
    lines = [l for l in text.splitlines() if a_ip in l and re.search(reason_re, l, re.I)]
    r.check(f"certs, {what}: backupd's log names the peer {a_ip} and the reason",
            bool(lines), f"a line with {a_ip} matching /{reason_re}/i", text.strip()[-600:] or "(empty)")


def certs(r, binary):
    topo, c = new_topology()
    with topo:
        dep = rp.Deployment(topo, c, binary)
        for name in ("self_signed", "other", "intruder"):
            cert = getattr(c, name)[0]
            cs.log(f"{name}: {rp.cert_subject(cert)}; verifies against our CA: {rp.cert_verifies(c.ca, cert)}")
        backup = dep.start_backupd()
        up = rp.Up(topo, dep, backup, None, None, dep.vip_client(), None)
        baseline = dep.state_files("b")

        offset = len(backup.log_text())
        seen = no_cert_client(topo, c.ca)
        r.check("certs, no client certificate: the backup sends no data and closes",
                not seen.startswith("data"), "refused or closed", seen)
        expect_refused(r, "no client certificate", up, offset, baseline,
                       r"certificate|no cert|did not return|peer", wait_s=0.5)

        for what, field, reason in CERT_CASES:
            offset = len(backup.log_text())
            dep.write_primary_conf(cert=getattr(c, field))
            primary = dep.start_primaryd(wait=False)
            try:
                expect_refused(r, what, up, offset, baseline, reason)
                r.check(f"certs, {what}: primaryd keeps running and retrying (the backup refuses it)",
                        primary.alive(), "alive", f"exited: {primary.log_tail(600)}")
            finally:
                primary.kill9()
                leftovers = rp.running_in(topo, topo.a, binary)
                for pid in leftovers:
                    cs.Proc(pid, "service left behind by a killed primaryd").kill9()
            r.check(f"certs, {what}: no takeover in B (nothing was ever replicated)",
                    not rp.running_in(topo, topo.b, binary), "no kvserver in B",
                    rp.running_in(topo, topo.b, binary))

        dep.write_primary_conf()
        primary = dep.start_primaryd()
        try:
            pa, be = rp.wait_acked(primary, backup, at_least=1)
            r.check("certs: the right certificate then replicates", True)
            cs.log(f"right certificate: primary acked {pa}, backup holds {be}")
        except cs.TestError as e:
            r.fail(f"certs: expected the right certificate to replicate: {e}")


# ---------------------------------------------------------------- partition

def partition(r, binary, how="isolate"):
    """HOW: 'isolate' parts A and B with bridge port isolation (C reaches both and polls
    both); 'unplug' takes A's veth out of the bridge (A is cut off from everyone, so a
    client inside A polls A, and C polls B)."""
    topo, certs_ = new_topology()
    tag = "partition" if how == "isolate" else "partition (unplug)"
    with topo:
        up = rp.bring_up(topo, certs_, binary)
        svc = up.dep.service
        lease, hb = svc["lease_ms"] / 1000, svc["heartbeat_interval_ms"] / 1000
        to_a = rp.Prober(up.dep.client_to(topo.a, from_ns=topo.a if how == "unplug" else None), "pa")
        to_b = rp.Prober(up.dep.client_to(topo.b), "pb")
        for p in (to_a, to_b):
            p.start()
        try:
            time.sleep(1.0)
            if not r.check(f"{tag}: before the fault: A serves, nothing serves in B",
                           to_a.acks() and not to_b.acks(), "A acks, B none",
                           f"A {len(to_a.acks())} acks, B {len(to_b.acks())}"):
                return
            if how == "isolate":
                topo.isolate(topo.a, topo.b)
                want = {"A->B": "unreachable", "C->A": "reachable", "C->B": "reachable"}
            else:
                topo.unplug(topo.a)
                want = {"A->B": "unreachable", "C->A": "unreachable", "C->B": "reachable"}
            t_cut = time.monotonic()
            paths = {f"{x}->{y}": rp.reachable(nx, topo.addr[ny]) for x, nx, y, ny in (
                ("A", topo.a, "B", topo.b), ("C", topo.c, "A", topo.a), ("C", topo.c, "B", topo.b))}
            r.check(f"{tag}: the fault parts A from B", paths == want, want, paths)
            rp.wait_for("a write acknowledged by B", lambda: to_b.acks(), 30 + lease, 0.05)
            b_first_sent, b_first_recv = to_b.acks()[0][:2]
            time.sleep(2.0)  # both sides polled while B serves
            if how == "isolate":
                topo.unisolate(topo.a, topo.b)
            else:
                topo.plug(topo.a)
            t_heal = time.monotonic()
            time.sleep(3.0)
        finally:
            for p in (to_a, to_b):
                p.stop()

        a_acks = [a for a in to_a.acks() if a[0] >= t_cut]
        last_a = max((a[1] for a in a_acks), default=None)
        cs.log(f"{tag}: A acknowledged {len(a_acks)} writes after the cut, the last "
               f"{'never' if last_a is None else f'{(last_a - t_cut) * 1000:.0f} ms'} after it; B's first "
               f"write sent {(b_first_sent - t_cut) * 1000:.0f} ms after the cut")
        bound = lease + 2 * hb + 0.25
        late = [a for a in a_acks if a[0] > t_cut + bound]
        r.check(f"{tag}: A froze within its lease (no write acknowledged that was sent more than "
                f"lease + 2 heartbeats + 250 ms = {bound * 1000:.0f} ms after the cut)", not late,
                "none", f"{len(late)}, sent up to {(max(a[0] for a in late) - t_cut) * 1000:.0f} ms after the cut"
                if late else "")
        # B began to serve after its last refused request was sent, and before its first answered one.
        b_refused = max((a[0] for a in to_b.attempts if not a[2] and a[0] < b_first_sent), default=t_cut)
        r.check(f"{tag}: B served only after A's lease ran out (its last refused request was sent "
                "a lease or more after the cut)",
                b_refused >= t_cut + lease, f">= {lease * 1000:.0f} ms after the cut",
                f"{(b_refused - t_cut) * 1000:.0f} ms")
        overlap = [a for a in a_acks if a[0] >= b_first_recv]
        r.check(f"{tag}: A acknowledged no write sent after B had answered one (never two serving copies)",
                not overlap, "none", f"{len(overlap)} writes acknowledged by A after B served")
        r.check(f"{tag}: A's last acknowledged write came back before B's first was sent",
                last_a is None or last_a < b_first_sent, "last A ack < first B send",
                f"A's last ack {(last_a - b_first_sent) * 1000:.0f} ms after B's first send" if last_a else "")
        after = [a for a in to_a.attempts if b_first_recv <= a[0] < t_heal]
        kinds = sorted({str(a[3]) for a in after if not a[2]})
        frozen = after and all(not a[2] and "timed out" in str(a[3]) for a in after)
        r.check(f"{tag}: while B serves, A's service is frozen (its requests time out, it is not dead)",
                frozen, "every request to A times out",
                f"{len(after)} requests, {sum(a[2] for a in after)} acknowledged, errors {kinds[:3]}")
        healed = [a for a in to_a.acks() if a[0] >= t_heal]
        r.check(f"{tag}: after the partition heals A still acknowledges nothing (B serves)",
                not healed, "no A ack after the heal", f"{len(healed)} A acks")
        b_after = [a for a in to_b.attempts if a[0] >= t_heal]
        r.check(f"{tag}: B goes on serving after the heal", b_after and all(a[2] for a in b_after[-10:]),
                "the last 10 writes to B acknowledged", f"{sum(a[2] for a in b_after)} of {len(b_after)}")
        st = up.dep.client_to(topo.b).state()
        r.check(f"{tag}: the copy serving in B is A's (same instance id)",
                st["instance"] == up.state["instance"], up.state["instance"], st["instance"])


# ---------------------------------------------------------------- fence

FENCE_FAILING_S = 3.0


def fence(r, binary):
    topo, certs_ = new_topology()
    with topo:
        up = rp.bring_up(topo, certs_, binary, fence_rc=1)
        writer = rp.Writer(up.vip)
        writer.start()
        try:
            writer.wait_acks(100)
            time.sleep(1.0)  # writes old enough to be in an acknowledged epoch
            t_kill = rp.kill_now(up.service, up.primary.proc)
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)
            time.sleep(up.dep.service["failover_timeout_ms"] / 1000 + FENCE_FAILING_S)
            runs = rp.fence_runs(up.dep.dir)
            serving = rp.running_in(topo, topo.b, binary)
            st = up.backup.status()
            r.check(f"fence: while the fence hook fails, B does not take over ({FENCE_FAILING_S:g} s)",
                    len(runs) >= 2 and not serving and not rp.hook_runs(up.dep.hook_env)
                    and st.get("role") in ("backup", "fencing"),
                    "the fence hook retried, no kvserver in B, no takeover hook, role backup or fencing",
                    f"{len(runs)} fence runs, kvserver in B {serving}, takeover hook runs "
                    f"{len(rp.hook_runs(up.dep.hook_env))}, role {st.get('role')}")
            r.check("fence: the fence hook is given CHECKSYNC_SERVICE",
                    runs and all(svc == rp.SERVICE for _, svc, _ in runs), rp.SERVICE,
                    sorted({svc for _, svc, _ in runs}))
            t_ok = time.time()
            rp.set_fence_rc(up.dep.dir, 0)
        except BaseException:
            writer.stop()
            raise
        rp.check_takeover(r, "fence takeover", up, writer, t_kill)
        hooks = rp.hook_runs(up.dep.hook_env)
        ok_runs = [t for t, _, rc in rp.fence_runs(up.dep.dir) if rc == 0]
        first_ok = min(ok_runs, default=None)
        r.check("fence: B took over only after the fence hook succeeded",
                hooks and first_ok is not None and first_ok >= t_ok
                and float(hooks[0]["START"]) >= first_ok,
                "a fence run that succeeded after it was let succeed, then the takeover hook",
                f"first successful fence run {first_ok - t_ok:+.2f}s after it could succeed, takeover "
                f"hook {(float(hooks[0]['START']) - first_ok) if hooks else 'never'} s after that"
                if first_ok is not None else "no fence run succeeded")


# ---------------------------------------------------------------- bad-config

def set_key(path, section, key, value):
    """Sets KEY = VALUE in SECTION of the ini file PATH (replacing the line that sets KEY,
    or adding one right after the section header); returns its line number."""
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            lines[i] = f"{key} = {value}"
            break
    else:
        i = lines.index(f"[{section}]") + 1
        lines.insert(i, f"{key} = {value}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return i + 1


def add_line(path, after, text):
    with open(path) as f:
        lines = f.read().splitlines()
    i = lines.index(after) + 1
    lines.insert(i, text)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return i + 1


# kind ('primary'/'backup'), file ('daemon'/'service'), section, key, value, what the message must name
BAD = [
    ("primary", "daemon", "daemon", "epoch_intervall_ms", "100", "unknown key"),
    ("primary", "daemon", "daemon", "status_socket", "relative/primary.sock", "bad value (relative path)"),
    ("primary", "daemon", "daemon", "listen", "0.0.0.0:7000", "backup-only key on the primary"),
    ("primary", "service", "service", "epoch_interval_ms", "5", "bad value (out of range)"),
    ("primary", "service", "service", "lease_ms", "1500", "lease >= failover timeout"),
    ("primary", "service", "service", "dirty_tracking", "softdirty", "bad value (enum)"),
    ("primary", "service", "service", "failover_timout_ms", "1000", "unknown key"),
    ("primary", "service", "service", "command", "kvserver -addr 0.0.0.0:8080", "bad value (relative program)"),
    ("backup", "daemon", "tls", "crl", "/etc/checksync/crl.pem", "unknown key"),
    ("backup", "daemon", "daemon", "listen", "10.213.0.2", "bad value (no port)"),
    ("backup", "service", "service", "heartbeat_interval_ms", "500", "heartbeat >= lease"),
    ("backup", "service", "service", "epoch_interval_ms", "100ms", "bad value (unit)"),
]


def bad_config(r, binary):
    topo, c = new_topology()
    with topo:
        cases = [(kind, f, sec, key, val, what, None) for kind, f, sec, key, val, what in BAD]
        cases.append(("backup", "daemon", "metrics", None, "[metrics]", "unknown section", None))
        cases.append(("backup", "daemon", "daemon", "listen", None, "missing required key", "file only"))
        for kind, f, section, key, value, what, mode in cases:
            dep = rp.Deployment(topo, c, binary)
            side = "a" if kind == "primary" else "b"
            path = {"daemon": dep.primary_conf if kind == "primary" else dep.backup_conf,
                    "service": dep.service_file[side]}[f]
            if key is None:
                line = add_line(path, "# written by the test", value)
                need, mention = f"{path}:{line}:", "metrics"
            elif value is None:
                with open(path) as fh:
                    text = fh.read()
                with open(path, "w") as fh:
                    fh.write(re.sub(rf"(?m)^{key} = .*\n", "", text))
                need, mention = f"{path}:", key
            else:
                line = set_key(path, section, key, value)
                need, mention = f"{path}:{line}:", key
            binpath, prog = (cs.primaryd(), PRIMARYD) if kind == "primary" else (cs.backupd(), BACKUPD)
            conf = dep.primary_conf if kind == "primary" else dep.backup_conf
            ns = topo.a if kind == "primary" else topo.b
            tag = f"bad-config, {prog}, {what}: {key or value}" + (f" = {value}" if key and value else "")
            try:
                run = cs.run_engine([binpath, "--config", conf], ns, timeout=10)
            except cs.TestError as e:
                r.fail(f"{tag}: expected a non-zero exit within 10 s; {e}")
                continue
            problems = []
            if run.rc == 0:
                problems.append("exit status 0, expected non-zero")
            err = cs.one_line_error(run.stderr, prog)
            if err:
                problems.append(err)
            line1 = run.stderr.strip().splitlines()[0] if run.stderr.strip() else ""
            if need not in line1:
                problems.append(f"expected the line to name {need!r}")
            if mention not in line1:
                problems.append(f"expected it to mention {mention!r}")
            left = rp.running_in(topo, ns, binary)
            if left:
                problems.append(f"it left kvserver running: {left}")
                for pid in left:
                    cs.Proc(pid, "kvserver left by a refused config").kill9()
            r.check(tag, not problems, f"non-zero exit, one line '{prog}: error: {need} ...'",
                    f"rc {run.rc}, stderr {run.stderr.strip()!r}; " + cs.summarize(problems))


SCENARIOS = {
    "kill-primaryd": kill_primaryd,
    "kill-backupd": kill_backupd,
    "torn-epoch": torn_epoch,
    "certs": certs,
    "partition": partition,
    "partition-unplug": lambda r, binary: partition(r, binary, "unplug"),
    "fence": fence,
    "bad-config": bad_config,
}


def main(r, *names):
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise cs.TestError(f"unknown scenario {', '.join(unknown)}; expected one of {', '.join(SCENARIOS)}")
    binary = cs.build_workload("kvserver", "cgo")
    for name in names or SCENARIOS:
        cs.log(f"--- {name}")
        try:
            SCENARIOS[name](r, binary)
        except cs.TestError as e:
            r.fail(f"{name}: {e}")


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
