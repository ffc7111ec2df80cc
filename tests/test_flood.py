#!/usr/bin/env python3
"""Connection flood against backupd (issue 8, item 2).

Usage: test_flood.py [SECONDS]   (default 60)

Hosts are network namespaces (tests/lib/replication.py). kvserver is
protected by primaryd in A and replicated to backupd in B, which runs with
the descriptor limit of its unit (LimitNOFILE= in
systemd/checksync-backup.service, applied with prlimit). From host C, from
20 addresses of its own (10.213.N.10-29, test addresses only), 2,000 TCP
connections to B's listen address each send one byte every 3 s; one closed
by backupd is opened again. For SECONDS:

  - replication goes on: the backup's epoch advances at >= 9.5 epochs/s
    (epoch_interval_ms = 100) and the primary's acknowledged epoch follows;
  - backupd uses < 10% of a CPU (utime + stime from /proc/PID/stat);
  - its log stays small: refusals are rate-limited (one line per address
    and reason, at most 20, per 10 s window), so < 200 lines a minute;
  - no takeover: the backup stays a backup, no kvserver runs in B;
  - a trickling connection is closed by the handshake deadline (10 s in
    all, not an inactivity timeout) within 15 s.
"""

import os
import re
import resource
import selectors
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

SRC = os.environ.get("CHECKSYNC_SRC", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONNS = 2000
# A TLS record header announcing a 16 KiB handshake record: OpenSSL then waits for the
# whole record, so one byte every few seconds keeps a handshake going for as long as
# the server lets it (an inactivity timeout never fires).
RECORD_HEADER = b"\x16\x03\x01\x40\x00"
SOURCES = 20
TRICKLE_S = 3.0


def unit_nofile():
    """The soft:hard LimitNOFILE= of the backup's unit."""
    text = open(os.path.join(SRC, "systemd", "checksync-backup.service")).read()
    m = re.search(r"^LimitNOFILE=(\d+):(\d+)", text, re.M)
    if not m:
        raise cs.TestError("systemd/checksync-backup.service sets no LimitNOFILE=SOFT:HARD")
    return int(m.group(1)), int(m.group(2))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Flood(threading.Thread):
    """CONNS non-blocking TCP connections from C's extra addresses to B, one byte each every
    TRICKLE_S seconds; closed ones are reopened."""

    def __init__(self, topo, sources):
        super().__init__(daemon=True)
        self.topo, self.sources = topo, sources
        self.target = (topo.addr[topo.b], rp.BACKUP_PORT)
        self.stop_flag = False
        self.opened = self.closed_by_peer = self.bytes_sent = 0
        self.errors = {}
        self.fresh = set()  # sockets that have not sent the record header yet

    def _open(self, i):
        with cs.in_netns(self.topo.c):
            s = socket.socket()
        s.setblocking(False)
        s.bind((self.sources[i % len(self.sources)], 0))
        try:
            s.connect(self.target)
        except BlockingIOError:
            pass
        self.opened += 1
        self.fresh.add(s)
        return s

    def run(self):
        socks = [None] * CONNS
        try:
            for i in range(CONNS):
                socks[i] = self._open(i)
            while not self.stop_flag:
                t0 = time.monotonic()
                for i in range(CONNS):
                    if self.stop_flag:
                        break
                    try:
                        s = socks[i]
                        n = s.send(RECORD_HEADER if s in self.fresh else b"\x01")
                        self.fresh.discard(s)
                        self.bytes_sent += n
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as e:
                        self.closed_by_peer += 1
                        self.errors[e.__class__.__name__] = self.errors.get(e.__class__.__name__, 0) + 1
                        self.fresh.discard(socks[i])
                        socks[i].close()
                        socks[i] = self._open(i)
                    time.sleep(TRICKLE_S / CONNS / 2)  # spread the bytes over the period
                time.sleep(max(0, TRICKLE_S - (time.monotonic() - t0)))
        finally:
            for s in socks:
                if s:
                    s.close()

    def stop(self):
        self.stop_flag = True
        self.join(30)


def deadline_probe(topo, sources):
    """One connection trickling a byte every 2 s: how long until backupd closes it."""
    with cs.in_netns(topo.c):
        s = socket.socket()
    s.bind((sources[0], 0))
    s.settimeout(5)
    s.connect((topo.addr[topo.b], rp.BACKUP_PORT))
    t0 = time.monotonic()
    s.send(RECORD_HEADER)
    try:
        while time.monotonic() - t0 < 30:
            try:
                s.send(b"\x01")
                s.settimeout(2)
                if s.recv(1024) == b"":
                    return time.monotonic() - t0
            except socket.timeout:
                continue
    except OSError:
        return time.monotonic() - t0
    finally:
        s.close()
    return None


def main(r, seconds="60"):
    seconds = float(seconds)
    soft, hard = unit_nofile()
    _, my_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (my_hard, my_hard))  # our 2,000 sockets
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        dep = rp.Deployment(topo, certs, binary)
        backup = dep.start_backupd()
        hard = min(hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        rc = os.system(f"prlimit --pid {backup.pid} --nofile={soft}:{hard}")
        r.require(f"backupd runs at the unit's LimitNOFILE={soft}", rc == 0, "prlimit exit 0", rc)
        primary = dep.start_primaryd()
        rp.service_proc(primary, binary)
        rp.wait_acked(primary, backup, at_least=5)
        with open(f"/proc/{backup.pid}/limits") as f:
            lim = [l for l in f if l.startswith("Max open files")]
        cs.log(f"backupd limits: {lim[0].strip() if lim else '?'}")

        sources = [f"10.213.{topo.net}.{10 + i}" for i in range(SOURCES)]
        for a in sources:
            cs._ip("-n", topo.c, "addr", "add", a + "/24", "dev", rp.DEV)

        e0, t0 = backup.field("epoch"), time.monotonic()
        time.sleep(5)
        e1, t1 = backup.field("epoch"), time.monotonic()
        cs.log(f"before the flood: {(e1 - e0) / (t1 - t0):.2f} epochs/s")

        probe_s = deadline_probe(topo, sources)  # alone: during the flood the limits refuse it at once
        log_lines0 = len(backup.log_text().splitlines())
        log_bytes0 = len(backup.log_text())
        flood = Flood(topo, sources)
        flood.start()
        time.sleep(5)  # the flood is up
        c0, e0, a0, t0 = cpu_seconds(backup.pid), backup.field("epoch"), primary.field("acked"), time.monotonic()
        roles = set()
        while time.monotonic() - t0 < seconds:
            time.sleep(5)
            roles.add(backup.field("role"))
            r.require("backupd alive during the flood", backup.alive(), "alive", backup.log_tail())
        c1, e1, a1, t1 = cpu_seconds(backup.pid), backup.field("epoch"), primary.field("acked"), time.monotonic()
        flood.stop()
        text = backup.log_text()
        lines = text.splitlines()[log_lines0:]
        rate = (e1 - e0) / (t1 - t0)
        cpu = (c1 - c0) / (t1 - t0) * 100
        cs.log(f"flood: {flood.opened} connections opened, {flood.closed_by_peer} closed by backupd, "
               f"{flood.bytes_sent} bytes trickled ({flood.errors}); backup epoch {e0} -> {e1} in "
               f"{t1 - t0:.1f} s = {rate:.2f} epochs/s; primary acked {a0} -> {a1}; backupd CPU {cpu:.1f}%; "
               f"log +{len(lines)} lines, +{len(text) - log_bytes0} bytes; roles {roles}; "
               f"trickling connection closed after {probe_s} s")
        r.check("the flood held 2,000 connections at a time", flood.opened >= CONNS, f">= {CONNS}", flood.opened)
        r.check("replication went on at >= 9.5 epochs/s during the flood", rate >= 9.5, ">= 9.5", f"{rate:.2f}")
        r.check("the primary's acknowledged epoch followed", isinstance(a1, int) and a1 - a0 >= 9 * (t1 - t0),
                f">= {9 * (t1 - t0):.0f} more", a1 - a0 if isinstance(a1, int) else a1)
        r.check("backupd used < 10% CPU during the flood", cpu < 10, "< 10%", f"{cpu:.1f}%")
        refusals = [l for l in lines if "refused connection" in l]
        r.check("backupd's log lines were rate-limited", len(lines) < 200 * seconds / 60, f"< {200 * seconds / 60:.0f} lines",
                f"{len(lines)} ({len(refusals)} refusals); last: {lines[-3:]}")
        r.check("a refusal line counts what it did not log",
                any("not logged" in l for l in refusals), "a '... not logged' line", refusals[-3:])
        r.check("no takeover during the flood", roles <= {"backup"} and not rp.running_in(topo, topo.b, binary),
                "role backup only, no kvserver in B", f"roles {roles}, {rp.running_in(topo, topo.b, binary)}")
        s = probe_s
        r.check("a trickling connection is closed by the handshake deadline", s is not None and 9 <= s <= 15,
                "closed 10-15 s after it opened", s)
        r.check("no accept() spin: backupd never logged EMFILE more than rate-limited",
                sum("accept:" in l for l in lines) <= seconds / 10 * 5 + 5, "few accept lines",
                sum("accept:" in l for l in lines))


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
