#!/usr/bin/env python3
"""After a reconnect the primary goes on from the epoch the backup holds,
instead of shipping the whole service again, and the backup's image is still
right: a takeover from it serves every acknowledged key.

kvserver under the daemons with a 1 s epoch interval, 300 keys written and
acknowledged. Then backupd is killed (-9) right after it has committed the
primary's last epoch, and started again on its state dir: its HELLO says
which epoch it holds (wire.h), the primary's last one sent, so the primary's
next epoch must be a delta on it:
  - primaryd's status counts the reconnect as resumed, and its log says so;
  - the restarted backupd commits no full image (every epoch a delta);
  - 300 more keys are written; A dies (primaryd and the service, kill -9);
    B takes over and serves all 600 keys and the writer's acknowledged ones.
A kill that lands while an epoch is in flight leaves the backup an epoch
behind (the primary then rightly sends a full one): the round is tried again,
up to 5 times.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

EPOCH_MS = 1000


def rows(daemon):
    return {name: value for _, _, name, _, value in rp.status_socket_rows(daemon.socket)}


def restart_backup_between_epochs(up):
    """Kills backupd once it holds the primary's last epoch, with no epoch in flight,
    and starts it again; returns UP with the new backupd."""
    def settled():
        p, b = rows(up.primary), rows(up.backup)
        if p.get("epoch") and p.get("epoch") == p.get("acked_epoch") == b.get("epoch"):
            return True
        raise cs.TestError(f"primary epoch {p.get('epoch')}, acked {p.get('acked_epoch')}, backup "
                           f"{b.get('epoch')}")
    rp.wait_for("the backup holding the primary's last epoch", settled, 30, 0.02)
    up.backup.proc.kill9()
    time.sleep(0.2)
    return up._replace(backup=up.dep.start_backupd())


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        up = rp.bring_up(topo, certs, binary, epoch_interval_ms=EPOCH_MS)
        keys = cs.kv_write(up.vip, "a", 300, "one")
        resumed = 0
        for attempt in range(5):
            before = rows(up.primary)
            up = restart_backup_between_epochs(up)
            rp.wait_acked(up.primary, up.backup, at_least=int(before["epoch"]) + 1, timeout=60)
            resumed = rows(up.primary).get("reconnects_resumed", 0)
            if resumed:
                break
            cs.log(f"attempt {attempt + 1}: the kill met an epoch in flight; again")
        r.check("the primary went on from the backup's epoch after the reconnect (status)",
                resumed >= 1, ">= 1 reconnects_resumed", resumed)
        r.check("primaryd's log says it went on from the backup's epoch",
                "the last one sent: going on from it" in up.primary.log_text(), "the line",
                up.primary.log_tail(600))
        # The log of this backupd run: from its last start on.
        blog = up.backup.log_text().rsplit("listening on", 1)[-1]
        r.check("the restarted backupd committed no full image (only deltas on what it held)",
                "full image" not in blog, "no 'full image' commit", blog[-600:])

        keys.update(cs.kv_write(up.vip, "b", 300, "two"))
        writer = rp.Writer(up.vip)
        writer.start()
        try:
            writer.wait_acks(30)
            # Writes acknowledged more than an epoch interval (+ slack) before the kill must be at B.
            time.sleep(EPOCH_MS / 1000 + rp.SLACK_S + 0.5)
            acked = rows(up.primary)["epoch"]
            rp.wait_acked(up.primary, up.backup, at_least=int(acked) + 1, timeout=60)
            t_kill = rp.kill_now(up.service, up.primary.proc)
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)
        except BaseException:
            writer.stop()
            raise
        rp.check_takeover(r, "resume", up, writer, t_kill)
        problems = cs.kv_check(up.vip, keys, each=False)
        r.check("B serves the 600 keys written before and after the reconnect", not problems,
                "all there", cs.summarize(problems))


if __name__ == "__main__":
    cs.run(main)
