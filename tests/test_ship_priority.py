#!/usr/bin/env python3
"""primaryd runs ahead of the service it guards, and the service does not
inherit that: what an operator checks with `ps -o ni`.

At equal priority a busy service on primaryd's CPU left primaryd 4 ms runs
between 8-20 ms waits, so shipping an epoch took longer than the epoch
interval and epochs merged (bench/paper_bench.py). primaryd now runs 10
nice steps ahead; SCHED_RESET_ON_FORK gives its children nice 0 back. A
service that inherited nice -10 would starve everything else on its host.
  - every thread of primaryd runs at nice -10, and its log says so;
  - every thread of the service runs at nice 0 (as started, not -10);
  - epochs are shipped and acknowledged.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402


def nices(pid):
    """The nice value of each thread of PID, from /proc (field 19 of stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    return out


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, epoch_interval_ms=100)
        keys = cs.kv_write(up.vip, "a", 50, "one")
        rp.wait_acked(up.primary, up.backup, at_least=3, timeout=30)
        # Relative to how the test itself runs (0 under meson); a negative nice comes back as 0.
        base = os.getpriority(os.PRIO_PROCESS, 0)
        want_p, want_s = max(base - 10, -20), base if base - 10 >= 0 else 0
        p = nices(up.primary.pid)
        r.check(f"primaryd runs at nice {want_p}", set(p.values()) == {want_p}, {want_p}, p)
        r.check("primaryd's log says it runs ahead of the services",
                "10 steps ahead of the services" in up.primary.log_text(), "the line",
                up.primary.log_tail(600))
        s = nices(up.service.pid)
        r.check(f"every thread of the service runs at nice {want_s} (not primaryd's {want_p})",
                set(s.values()) == {want_s}, {want_s}, s)
        problems = cs.kv_check(up.vip, keys, each=False)
        r.check("the service answers while protected", not problems, "all there",
                cs.summarize(problems))


if __name__ == "__main__":
    cs.run(main)
