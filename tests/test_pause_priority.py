#!/usr/bin/env python3
"""primaryd runs at real-time priority (SCHED_FIFO) only while it holds the
service, and at its own policy the rest of the time (capture/threads.c:
capture_cpu_hold, capture_cpu_release).

kvserver under the daemons with a 20 ms epoch interval, keys written while
primaryd's scheduling policy is sampled for 3 s (sched_getscheduler, every
0.5 ms):
  - some samples find it at SCHED_FIFO (the stops run real-time);
  - most find it at SCHED_OTHER (it went back after each stop: a primaryd
    left real-time would starve the service on its CPU);
  - the service's own threads are never real-time;
  - every key written meanwhile is served.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

SAMPLE_S = 3.0


def policy(tid):
    """TID's scheduling policy without the reset-on-fork flag, None if it is gone."""
    try:
        return os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
    except OSError:
        return None


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, epoch_interval_ms=20)
        pid = up.primary.proc.pid
        keys, failed = {}, []

        def write():
            try:
                keys.update(cs.kv_write(up.vip, "p", 400, "prio"))
            except cs.TestError as e:
                failed.append(str(e))

        writer = threading.Thread(target=write)
        writer.start()
        seen = {}
        end = time.monotonic() + SAMPLE_S
        while time.monotonic() < end:
            p = policy(pid)
            seen[p] = seen.get(p, 0) + 1
            time.sleep(0.0005)
        writer.join(60)
        service_rt = [t for t in os.listdir(f"/proc/{up.service.pid}/task")
                      if policy(int(t)) not in (os.SCHED_OTHER, None)]
        total = sum(n for p, n in seen.items() if p is not None)
        fifo = seen.get(os.SCHED_FIFO, 0)
        other = seen.get(os.SCHED_OTHER, 0)
        cs.log(f"primaryd policy samples: {fifo} SCHED_FIFO, {other} SCHED_OTHER of {total}")
        r.check("primaryd ran at SCHED_FIFO in some samples (the stops)", fifo > 0, "> 0", fifo)
        r.check("primaryd ran at SCHED_OTHER in most samples (back after each stop)",
                total and other > total / 2, f"> {total / 2:.0f} of {total}", other)
        r.check("none of the service's threads is real-time", not service_rt, "none", service_rt)
        r.check("the keys were written", not failed and len(keys) == 400, "400",
                failed or len(keys))
        problems = cs.kv_check(up.vip, keys, each=False)
        r.check("the service serves every key written meanwhile", not problems, "all there",
                cs.summarize(problems))


if __name__ == "__main__":
    cs.run(main)
