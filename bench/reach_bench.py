#!/usr/bin/env python3
"""reach_bench: bytes shipped per request with and without the reachability scan of new objects.

For each workload (tests/workloads/garbage: about 4 KB of garbage per request;
tests/workloads/kvserver: go-cache behind net/http, the paper's workload) and
each setting (reach on, the default; reach off: CHECKSYNC_REACH=off in
primaryd's environment, today's span-level set), in a fresh topology: --keys
keys of --value-size bytes are set once (wrk fill), then `wrk -t1 -c16` runs
bench/kv.lua's mix (--set-percent /set, the rest /get, uniform keys) through
the VIP for --duration seconds at 10 epochs/s. Printed per row: requests/s,
bytes shipped per request served (primaryd's `shipped` counter, the epochs as
sent), per /set, the bytes a /set retains (its value), the ratio of the two,
and what the scan found (new, reached, zeroed bytes per request), and the
scan's CPU time per epoch (primaryd's thread clock, so it holds on a loaded
machine) with the staged bytes it scanned as roots and the bytes staged per
epoch (the scan's CPU grows with these; compare CPU per staged MB across
loads).

Run as root; on a shared machine the figures move with the load.
"""

import argparse
import collections
import os
import struct
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("CHECKSYNC_PRIMARYD", os.path.join(REPO, "build", "primaryd", "checksync-primaryd"))
os.environ.setdefault("CHECKSYNC_BACKUPD", os.path.join(REPO, "build", "backupd", "checksync-backupd"))

import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402
import paper_bench as pb  # noqa: E402

COUNTERS = ("shipped", "epochs_sent", "reach_new", "reach_reached", "reach_zeroed", "reach_scans_done",
            "reach_scans_skipped", "delta_wire", "delta_raw", "reach_reached_noscan",
            "reach_scan_cpu", "reach_roots")
SHIP_CLASSES = ("heap_new", "heap_old", "stacks", "globals", "offheap")
ROOTS = ("heap", "stacks", "globals", "offheap", "registers")
BREAKDOWN = tuple(f"reach_staged_{k}" for k in SHIP_CLASSES) + tuple(f"reach_shipped_{k}" for k in SHIP_CLASSES) \
    + tuple(f"reach_shipped_nonzero_{k}" for k in SHIP_CLASSES) \
    + tuple(f"reach_reached_from_{k}" for k in ROOTS)


def trace_summary(path, top=8):
    """Changed 8-byte words per kind of page in a CHECKSYNC_DEBUG_SHIP_TRACE file (format:
    capture/ship_trace.h), against the page the encoder had as its base (zeros on a miss).
    Words changed to zero on heap pages are mostly reach's zeroing of unreachable objects over
    older contents. Off-heap pages are grouped by 2 MiB region: with Go 1.19 a heapArena's 2 MiB bitmap is
    one or two such regions, whose words read like 0xfafa32fa... (scan bits high, pointer
    bits low), and mspan records (fixalloc) are others."""
    page = 4096
    changed, to_zero, pages = collections.Counter(), collections.Counter(), collections.Counter()
    with open(path, "rb") as f:
        while True:
            head = f.read(9)
            if len(head) < 9:
                break
            addr, how = struct.unpack("<QB", head)
            base = f.read(page) if how == 2 else bytes(page)
            cur = f.read(page)
            diff = [i for i in range(0, page, 8) if base[i:i + 8] != cur[i:i + 8]]
            n = 8 * len(diff)
            kind = "heap arena" if 0xc000000000 <= addr < 0xd000000000 else \
                "exe" if addr < 0x10000000 else f"off-heap {addr >> 21 << 21:#x}"
            changed[kind] += n
            to_zero[kind] += sum(8 for i in diff if cur[i:i + 8] == bytes(8))
            pages[kind] += 1
    total = max(1, sum(changed.values()))
    print(f"\nship trace {path}: {sum(pages.values())} pages, {total} changed word bytes")
    for kind, n in changed.most_common(top):
        print(f"  {kind:28} {n:10d} B changed ({100 * n / total:4.1f}%), {to_zero[kind]:10d} of them "
              f"to zero, over {pages[kind]} pages")


def run_one(workload, reach, args):
    binary = cs.build_workload(workload, "cgo")
    if reach == "off":
        os.environ["CHECKSYNC_REACH"] = "off"
    else:
        os.environ.pop("CHECKSYNC_REACH", None)
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, epoch_interval_ms=100, dirty_tracking="uffd")
        vip = cs.Client(topo.vip, rp.PORT, netns=topo.c)
        pb.fill(topo, args, vip, None)
        time.sleep(1)
        before = pb.rows(up.primary.socket)
        out = pb.wrk(topo, args, "mix", args.duration, None)
        time.sleep(0.5)
        after = pb.rows(up.primary.socket)
    os.environ.pop("CHECKSYNC_REACH", None)
    d = {k: (after.get(k) or 0) - (before.get(k) or 0) for k in COUNTERS + BREAKDOWN}
    n = max(1, out["requests"])
    sets = max(1, n * args.set_percent / 100)
    return {"workload": workload, "reach": reach, "rps": out["rps"], "requests": n,
            "per_request": d["shipped"] / n, "per_set": d["shipped"] / sets,
            "retained_per_set": args.value_size, "ratio": d["shipped"] / sets / args.value_size,
            "new_per_request": d["reach_new"] / n, "reached_per_request": d["reach_reached"] / n,
            "zeroed_per_request": d["reach_zeroed"] / n, "scans": d["reach_scans_done"],
            "skipped": d["reach_scans_skipped"], "epochs": d["epochs_sent"], "command": out["command"],
            "scan_cpu_ms": 1000 * d["reach_scan_cpu"] / max(1, d["reach_scans_done"] + d["reach_scans_skipped"]),
            "roots_mb": d["reach_roots"] / max(1, d["reach_scans_done"]) / 1e6,
            "staged_mb": sum(d[f"reach_staged_{k}"] for k in SHIP_CLASSES)
            / max(1, d["reach_scans_done"] + d["reach_scans_skipped"]) / 1e6,
            "breakdown": {k: d[k] / n for k in BREAKDOWN + ("delta_raw", "delta_wire", "reach_reached_noscan")}}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default="garbage,kvserver")
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--keys", type=int, default=20000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--set-percent", type=int, default=50)
    p.add_argument("--settings", default="off,on", help="reach settings to run, of off,on")
    p.add_argument("--ship-trace", metavar="PATH,SKIP,COUNT",
                   help="trace encoded pages (CHECKSYNC_DEBUG_SHIP_TRACE) and print where the changed "
                   "bytes are; use with one workload and one setting")
    args = p.parse_args()
    if args.ship_trace:
        os.environ["CHECKSYNC_DEBUG_SHIP_TRACE"] = args.ship_trace
    rows = []
    try:
        for w in args.workloads.split(","):
            for reach in args.settings.split(","):
                rows.append(run_one(w, reach, args))
                r = rows[-1]
                print(f"{w} reach {reach}: {r['rps']:.0f} req/s, {r['per_request']:.0f} B shipped/request, "
                      f"{r['per_set']:.0f} B/set", flush=True)
    finally:
        cs.cleanup()
    print(f"\n{'workload':10} {'reach':5} {'req/s':>7} {'B/request':>10} {'B/set':>8} {'kept/set':>8} "
          f"{'ratio':>6} {'new/req':>8} {'reached/req':>11} {'zeroed/req':>10} {'scans':>6} {'skipped':>7} "
          f"{'scan CPU ms/epoch':>17} {'roots MB/scan':>13} {'staged MB/epoch':>15}")
    for r in rows:
        print(f"{r['workload']:10} {r['reach']:5} {r['rps']:7.0f} {r['per_request']:10.0f} {r['per_set']:8.0f} "
              f"{r['retained_per_set']:8d} {r['ratio']:6.2f} {r['new_per_request']:8.0f} "
              f"{r['reached_per_request']:11.0f} {r['zeroed_per_request']:10.0f} {r['scans']:6.0f} "
              f"{r['skipped']:7.0f} {r['scan_cpu_ms']:17.2f} {r['roots_mb']:13.2f} {r['staged_mb']:15.2f}")
    print("\nper request: bytes staged / delta bytes encoded (before compression) by page kind; "
          "reached new bytes by the root kind that first found them")
    for r in rows:
        b = r["breakdown"]
        print(f"{r['workload']:10} {r['reach']:5} staged " +
              " ".join(f"{k}={b['reach_staged_' + k]:.0f}" for k in SHIP_CLASSES))
        print(f"{'':16} encoded " + " ".join(f"{k}={b['reach_shipped_' + k]:.0f}" for k in SHIP_CLASSES) +
              f" (raw {b['delta_raw']:.0f}, compressed {b['delta_wire']:.0f})")
        print(f"{'':16} nonzero " + " ".join(f"{k}={b['reach_shipped_nonzero_' + k]:.0f}" for k in SHIP_CLASSES))
        other = r["per_request"] - b["delta_wire"]
        print(f"{'':16} not deltas (mappings, threads, fds, framing): {other:.0f}/request, "
              f"{other * r['requests'] / max(1, r['epochs']) / 1024:.0f} KiB/epoch; "
              f"{r['requests'] / max(1, r['epochs']):.0f} requests/epoch")
        print(f"{'':16} reached from " + " ".join(f"{k}={b['reach_reached_from_' + k]:.0f}" for k in ROOTS) +
              f" (noscan {b['reach_reached_noscan']:.0f})")
    print(f"wrk: {rows[0]['command'] if rows else ''}")
    if args.ship_trace:
        trace_summary(args.ship_trace.split(",")[0])


if __name__ == "__main__":
    main()
