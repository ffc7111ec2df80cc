#!/usr/bin/env python3
"""The live set's span cache (capture/live.c) equals a full read of the
runtime's mspans, under load with forced GCs.

Each stop re-reads only the mspans whose pages write tracking saw written
since the scan before (the stop before, or the last pre-copy round, which
re-reads, with the service running, those written since the scan before
it), and keeps the others' records. primaryd runs with
the debug switch CHECKSYNC_CHECK_LIVE_SET=2: every second stop that used the
cache reads every mspan again, field by field, and fails the epoch with
"the span cache differs from a full read" on any difference.

kvserver under the daemons, 20 ms epochs, for LOAD_S: two writers, values of
varied sizes (new spans of several size classes), and a runtime.GC() every
50 ms (sweeping rewrites every mspan; freed spans are reused for others).
  - no stop found the cache differing from a full read, no epoch failed;
  - the check ran at least MIN_CHECKS times and found the spans equal;
  - the cache was used (live_spans_kept > 0) and spans were re-read too
    (live_spans_read > 0), and pre-copy rounds brought it forward
    (live_spans_refreshed > 0): the check compared something;
  - stops that found no safepoint ran a pre-copy round while they let the
    service run (precopy_retry_rounds > 0; the forced GCs make such stops),
    and the cache those rounds brought forward still equals a full read;
  - every key written is served, and epochs went on being acknowledged.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

LOAD_S = 6.0
MIN_CHECKS = 10
DIFFERS = "the span cache differs from a full read"
CHECKED = "span cache checked against a full read"


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    os.environ["CHECKSYNC_CHECK_LIVE_SET"] = "2"
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, epoch_interval_ms=20)
        keys, failed = {}, []
        stop = threading.Event()

        def write(prefix, size):
            n = 0
            try:
                while not stop.is_set():
                    k, v = f"{prefix}{n}", f"{n}-" + "x" * (size + n % size)
                    status, _ = up.vip.get("/set", {"k": k, "v": v}, timeout=5, retries=2)
                    if status != 200:
                        raise cs.TestError(f"/set {k}: HTTP {status}")
                    keys[k] = v
                    n += 1
            except cs.TestError as e:
                failed.append(str(e))

        def collect():
            try:
                while not stop.is_set():
                    up.vip.get("/gc", timeout=10)
                    time.sleep(0.05)
            except cs.TestError as e:
                failed.append(str(e))

        workers = [threading.Thread(target=write, args=("a", 40)),
                   threading.Thread(target=write, args=("b", 900)),
                   threading.Thread(target=collect)]
        for w in workers:
            w.start()
        time.sleep(LOAD_S)
        stop.set()
        for w in workers:
            w.join(60)
        # Epochs still go on (a check that failed would have failed its epoch).
        acked = up.primary.status().get("acked") or 1
        rp.wait_acked(up.primary, up.backup, at_least=acked + 2)
        st = {name: value for _s, _r, name, _u, value in rp.status_socket_rows(up.primary.socket)}
        log = up.primary.log_text()
        differs = [line for line in log.splitlines() if DIFFERS in line]
        checks = [line for line in log.splitlines() if CHECKED in line]
        failing = [line for line in log.splitlines() if "epoch capture failing" in line]
        cs.log(f"{len(checks)} checks against a full read; "
               f"spans read {st.get('live_spans_read')}, kept {st.get('live_spans_kept')}, "
               f"refreshed by rounds {st.get('live_spans_refreshed')}")
        if checks:
            cs.log(f"last: {checks[-1]}")
        r.check("no stop found the span cache differing from a full read", not differs, "none",
                differs[:3])
        r.check("no epoch capture failed", not failing, "none", failing[:3])
        r.check(f"the check ran at least {MIN_CHECKS} times", len(checks) >= MIN_CHECKS,
                f">= {MIN_CHECKS}", len(checks))
        r.check("the cache was used (mspans kept from an earlier stop)",
                (st.get("live_spans_kept") or 0) > 0, "> 0", st.get("live_spans_kept"))
        r.check("mspans were re-read too (written pages)", (st.get("live_spans_read") or 0) > 0,
                "> 0", st.get("live_spans_read"))
        r.check("pre-copy rounds re-read written mspans (with the service running)",
                (st.get("live_spans_refreshed") or 0) > 0, "> 0", st.get("live_spans_refreshed"))
        r.check("a stop that found no safepoint ran a round before its next try",
                (st.get("safepoint_retries") or 0) == 0 or (st.get("precopy_retry_rounds") or 0) > 0,
                "> 0 (or no retries)",
                f"{st.get('precopy_retry_rounds')} rounds, {st.get('safepoint_retries')} retries")
        r.check("the writers and the GCs ran without error", not failed, "no error", failed[:3])
        r.check("keys were written", len(keys) > 100, "> 100", len(keys))
        problems = cs.kv_check(up.vip, keys, each=False)
        r.check("the service serves every key written", not problems, "all there",
                cs.summarize(problems))


if __name__ == "__main__":
    cs.run(main)
