#!/usr/bin/env python3
"""The epoch cost breakdown: what status and /metrics say an epoch costs, per phase.

A protected kvserver under a small write load, both daemons with
metrics_listen. After 30 acknowledged epochs:
  - primaryd's status has p50, p99 and count rows for every phase of the
    pause (stop, safepoint, live set, dirty scan, threads, copy, fds,
    resume), for the whole pause and for the work after resume (encode,
    pack, TLS write); every phase counted each epoch, as often as the pause;
  - every phase is timed (its sum over the epochs is above zero) and the
    phases add up to the pause: their sums are at least 90% of the pause's
    (a phase the breakdown forgot would show as a gap);
  - both daemons' /metrics serve each as a Prometheus histogram: a TYPE
    histogram line, cumulative _bucket lines ending in le="+Inf" equal to
    _count, a _sum;
  - the backup's read, verify, apply, journal write, fsync and durable
    histograms count one sample per committed epoch.
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

PHASES = ["pause_stop", "pause_safepoint", "pause_live_set", "pause_dirty_scan", "pause_threads",
          "pause_copy", "pause_fds", "pause_resume"]
AFTER = ["ship_encode", "ship_pack", "ship_tls_write"]
BACKUP = ["recv_read", "recv_verify", "recv_apply", "journal_write", "journal_fsync", "journal_durable"]


def metrics(netns, port):
    with cs.in_netns(netns):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    return data.decode()


def histogram(text, name):
    """(cumulative bucket counts in order, +Inf count, _count, _sum) of checksync_NAME_seconds."""
    full = f"checksync_{name}_seconds"
    if f"# TYPE {full} histogram\n" not in text:
        return None
    buckets = [(m.group(1), int(m.group(2))) for m in
               re.finditer(rf'^{full}_bucket{{[^}}]*le="([^"]+)"}} (\d+)$', text, re.M)]
    count = re.search(rf"^{full}_count{{[^}}]*}} (\d+)$", text, re.M)
    total = re.search(rf"^{full}_sum{{[^}}]*}} (\S+)$", text, re.M)
    return buckets, int(count.group(1)) if count else None, float(total.group(1)) if total else None


def check_histogram(r, who, text, name, at_least):
    h = histogram(text, name)
    if not r.check(f"{who} /metrics: {name} is a Prometheus histogram", h is not None, "TYPE histogram",
                   "absent"):
        return None
    buckets, count, total = h
    counts = [c for _, c in buckets]
    r.check(f"{who} /metrics: {name} buckets are cumulative", counts == sorted(counts), "non-decreasing",
            counts)
    r.check(f"{who} /metrics: {name} ends with le=\"+Inf\" equal to _count",
            bool(buckets) and buckets[-1][0] == "+Inf" and buckets[-1][1] == count, count, buckets[-1:])
    r.check(f"{who} /metrics: {name}_count covers the epochs", count is not None and count >= at_least,
            f">= {at_least}", count)
    r.check(f"{who} /metrics: {name}_sum is a duration", total is not None and total >= 0, ">= 0", total)
    return count, total


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        dep = rp.Deployment(topo, certs, binary)
        dep.write_primary_conf(extra="metrics_listen = 127.0.0.1:9464")
        dep.write_backup_conf(extra="metrics_listen = 127.0.0.1:9465")
        backup = dep.start_backupd()
        primary = dep.start_primaryd()
        service = rp.service_proc(primary, binary)
        vip = dep.vip_client()
        cs.wait_serving(vip, service)
        writer = rp.Writer(vip)
        writer.start()
        try:
            rp.wait_acked(primary, backup, at_least=30, timeout=60)
        finally:
            writer.stop()
        time.sleep(0.5)
        prow = {n: v for _, _, n, _, v in rp.status_socket_rows(primary.socket)}
        brow = {n: v for _, _, n, _, v in rp.status_socket_rows(backup.socket)}
        pm, bm = metrics(topo.a, 9464), metrics(topo.b, 9465)

        pauses = prow.get("pause_count")
        r.check("primary status: the pause histogram counted the epochs",
                pauses is not None and pauses >= 30, ">= 30", pauses)
        for n in PHASES + AFTER:
            for suffix in ("_p50", "_p99", "_count"):
                r.check(f"primary status: {n}{suffix} present", n + suffix in prow, "a row", "absent")
        for n in PHASES + ["ship_encode", "ship_pack"]:
            r.check(f"primary status: {n} counted every epoch", prow.get(n + "_count") == pauses,
                    pauses, prow.get(n + "_count"))
        r.check("primary status: the pause p99 is at least its p50",
                (prow.get("pause_p99") or 0) >= (prow.get("pause_p50") or 1), prow.get("pause_p50"),
                prow.get("pause_p99"))

        pause = check_histogram(r, "primary", pm, "pause", 30)
        sums = [check_histogram(r, "primary", pm, n, 30) for n in PHASES]
        for n in AFTER:
            check_histogram(r, "primary", pm, n, 1)
        for n, got in zip(PHASES, sums):
            r.check(f"primary: phase {n} took time (its _sum over 30 epochs > 0)", bool(got) and got[1] > 0,
                    "> 0 s", got and got[1])
        if pause and all(sums):
            phases = sum(s for _, s in sums)
            r.check("the phases add up to the pause (>= 90% of its sum)", phases >= 0.9 * pause[1],
                    f">= {0.9 * pause[1]:.6f} s", f"{phases:.6f} s")

        committed = brow.get("epochs_total") or brow.get("epochs")
        for n in BACKUP:
            r.check(f"backup status: {n} counted", (brow.get(n + "_count") or 0) >= 30, ">= 30",
                    brow.get(n + "_count"))
            check_histogram(r, "backup", bm, n, 30)
        r.check("backup status: one recv_read sample per committed epoch",
                brow.get("recv_read_count") == committed, committed, brow.get("recv_read_count"))


if __name__ == "__main__":
    cs.run(main)
