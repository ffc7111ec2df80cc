#!/usr/bin/env python3
"""test_reach_config: the `reach` service key turns the reachability scan off.

The garbage workload (tests/workloads/garbage) runs under a service file
with `reach = off` while writes and forced GCs go on for 15 epochs: the
primary's status must count no scan done and every epoch's scan skipped,
must zero nothing, and a takeover must still serve every acknowledged key
(what ships is then the span-level set, as before the scan). The default
(`reach = on`) is covered by test_reach.py, whose checks need scans done.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

EPOCHS = 15


def rows(daemon):
    return {n: v for _, _, n, _, v in rp.status_socket_rows(daemon.socket)}


def main(r, mode="cgo"):
    binary = cs.build_workload("garbage", mode)
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, reach="off")
        writer = rp.Writer(up.vip, pad=80)
        writer.start()
        try:
            writer.wait_acks(30)
            for _ in range(3):
                up.vip.get("/gc", timeout=10)
            rp.wait_acked(up.primary, up.backup, at_least=EPOCHS, timeout=EPOCHS * 2 + 60)
            prow = rows(up.primary)
            t_kill = rp.kill_now(up.service, up.primary.proc)
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)
        except BaseException:
            writer.stop()
            raise
        done, skipped = prow.get("reach_scans_done"), prow.get("reach_scans_skipped") or 0
        r.check("reach = off: the primary did no reachability scan", done == 0, 0, done)
        r.check("reach = off: every epoch's scan was skipped", skipped >= EPOCHS - 1,
                f">= {EPOCHS - 1}", skipped)
        r.check("reach = off: nothing was zeroed", prow.get("reach_zeroed") == 0, 0,
                prow.get("reach_zeroed"))
        rp.check_takeover(r, "takeover", up, writer, t_kill)


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
