#!/usr/bin/env python3
"""The stop of a full epoch of a large heap (issue 13: the initial sync at 100 MiB,
1 GiB, 4 GiB), with and without pre-copy.

For each size: kvserver (go-cache) protected from its start while it preloads
SIZE of 300-byte values; once the preload is done and its last epoch acknowledged,
backupd is killed and started again on an empty state dir, so the primary must
send the whole heap again (a full epoch, as at the initial sync, with the heap
already there). Printed per size: the stop of that full epoch (`pause_full_last`
in primaryd's status), the size of the last epoch (steady state), the time
until the full epoch was acknowledged, whether the backup ever took over, and
the pause p50/p99 of the last 256 epochs.

Each row also says its wall time and the peak resident memory (VmHWM) of the
service, primaryd and the restarted backupd. A size is skipped, with the reason,
unless MemAvailable holds MEM_FACTOR times it: at 1 GiB the peaks were service
1,818, primaryd 2,093 (its shipped cache and pre-copy store) and backupd 1,824 MiB,
5.6 times the heap, so 4 GiB needs ~24 GiB available (this 24 GiB VM: skipped).

Usage: sudo bench/sync_bench.py [--sizes 100,1024[,4096]] [--precopy on|off] [--reach on|off]
(--reach off: reach's scan after each resume holds primaryd's loop for seconds
at these sizes, and the backup takes over during the preload; see test_burst.py.)
Python 3 standard library and tests/lib only; needs root (netns, ptrace).
"""

import argparse
import os
import shutil
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
os.environ.setdefault("CHECKSYNC_PRIMARYD", os.path.join(REPO, "build", "primaryd", "checksync-primaryd"))
os.environ.setdefault("CHECKSYNC_BACKUPD", os.path.join(REPO, "build", "backupd", "checksync-backupd"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

BYTES_PER_KEY = 358  # 300-byte values in go-cache: 3,000,000 keys are about 1 GiB
MEM_FACTOR = 6  # peak RSS of the three, over the heap: 5.6 measured at 1 GiB


def mem_available_mib():
    with open("/proc/meminfo") as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith("MemAvailable:"))


def peak_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def rows(daemon):
    out = {}
    for _, role, name, _, value in rp.status_socket_rows(daemon.socket):
        out[name] = value
        out["role"] = role
    return out


def one(binary, mib, precopy, reach):
    keys = mib * 2**20 // BYTES_PER_KEY
    res = {"mib": mib, "keys": keys}
    t_row = time.monotonic()
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, precopy=precopy, reach=reach,
                         extra_args=("-preload", str(keys), "-preload-size", "300"))
        def preloaded():
            if not up.vip.state(timeout=5).get("preload_done"):
                raise cs.TestError("not yet")
            return True
        rp.wait_for("the preload", preloaded, max(900, mib // 2), 0.5)
        res["preload_s"] = time.monotonic() - t_row

        def settled():
            p = rows(up.primary)
            if p.get("epoch") and p["epoch"] == p.get("acked_epoch"):
                return p
            raise cs.TestError(f"epoch {p.get('epoch')}, acked {p.get('acked_epoch')}")
        p = rp.wait_for("the last epoch acknowledged", settled, 600, 0.1)
        up.backup.proc.kill9()
        up.backup.proc.wait_gone(10)
        state = up.dep.state["b"]
        for e in os.listdir(state):
            shutil.rmtree(os.path.join(state, e), ignore_errors=True)
        t0 = time.monotonic()
        for attempt in range(10):  # a killed backupd of a big image frees its port late
            try:
                up = up._replace(backup=up.dep.start_backupd())
                break
            except cs.TestError:
                if attempt == 9:
                    raise
                time.sleep(1)
        rp.wait_acked(up.primary, up.backup, at_least=int(p["epoch"]) + 1, timeout=900)
        res["acked_s"] = time.monotonic() - t0
        q, b = rows(up.primary), rows(up.backup)
        res["full_stop_ms"] = (q.get("pause_full_last") or 0) * 1000
        res["full_bytes"] = b.get("epoch_size") or q.get("epoch_size")
        res["pause_p50_ms"] = (q.get("pause_p50") or 0) * 1000
        res["pause_p99_ms"] = (q.get("pause_p99") or 0) * 1000
        res["took_over"] = b.get("role") != "backup" or q.get("role") != "primary"
        res["roles"] = f"{q.get('role')}/{b.get('role')}"
        res["rounds"] = q.get("precopy_rounds")
        res["rss_mib"] = [peak_rss_mib(p) for p in (up.service.pid, up.primary.pid, up.backup.pid)]
        res["wall_s"] = time.monotonic() - t_row
        # Stops over 20 ms say where their time went (capture/incremental.c), and so do GC
        # cycles that made a stop copy whole mappings.
        res["long_stops"] = [l.split(": ", 2)[-1] for l in up.primary.log_text().splitlines()
                             if "epoch stopped the service for" in l or "a GC cycle has run" in l
                             or "copying whole mappings" in l]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1024", help="MiB of heap, comma-separated (default 100,1024)")
    ap.add_argument("--precopy", choices=("on", "off"), default="on")
    ap.add_argument("--reach", choices=("on", "off"), default="on")
    args = ap.parse_args()
    binary = cs.build_workload("kvserver", "cgo")
    print(f"# sync_bench --sizes {args.sizes} --precopy {args.precopy} --reach {args.reach}; loadavg "
          f"{open('/proc/loadavg').read().split()[:3]} (other users' load skews)")
    print(f"{'heap':>8} {'keys':>9} {'full-epoch stop ms':>19} {'last epoch KiB':>15} {'acked after s':>14} "
          f"{'pause p50/p99 ms (last 256)':>28} {'rounds':>7} {'roles A/B':>16}")
    for mib in (int(s) for s in args.sizes.split(",")):
        free = mem_available_mib()
        if free < MEM_FACTOR * mib:
            print(f"{mib:>6}Mi skipped: needs about {MEM_FACTOR * mib} MiB, MemAvailable is {free} MiB",
                  flush=True)
            continue
        try:
            r = one(binary, mib, args.precopy, args.reach)
        finally:
            cs.cleanup()  # a row's daemons and service hold gigabytes: never leave them behind
        print(f"{mib:>6}Mi {r['keys']:>9} {r['full_stop_ms']:>19.1f} {(r['full_bytes'] or 0) / 2**10:>15.0f} "
              f"{r['acked_s']:>14.1f} "
              f"{r['pause_p50_ms']:>13.1f} / {r['pause_p99_ms']:<12.1f} {r['rounds'] or 0:>7.0f} "
              f"{r['roles']:>16}", flush=True)
        rss = " / ".join("?" if m is None else f"{m:.0f}" for m in r["rss_mib"])
        print(f"        wall {r['wall_s']:.0f} s (preload {r['preload_s']:.0f} s); peak RSS MiB service / "
              f"primaryd / backupd {rss}; MemAvailable at start {free} MiB", flush=True)
        stops = [l for l in r["long_stops"] if "stopped the service" in l]
        shown = [l for l in r["long_stops"]
                 if "stopped the service" not in l or "a full epoch" in l]
        print(f"        {len(stops)} stops over 20 ms; GC waits, whole-mapping copies, full epochs:",
              flush=True)
        for line in shown:
            print(f"        {line}", flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # cleans up as an exception does
    main()
