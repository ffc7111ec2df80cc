#!/usr/bin/env python3
"""A hung primaryd never yields two serving copies.

Usage: test_hung.py [SECONDS ...]   (default: 0.6 1.1 1.5 3)

For each length, a fresh topology (tests/lib/replication.py), backupd in B,
primaryd in A guarding kvserver (lease 500 ms, failover timeout 1000 ms).
Three probers in C write a fresh key every 20 ms with a 300 ms timeout: to
A's own address, to B's own address, and to the service address (VIP). Then
primaryd gets SIGSTOP for the length, then SIGCONT, and the probers go on
for 4 s more. Checked:
  - never two copies answering: every write answered by A's copy (through A's
    address, or through the VIP by A's pid) came before the first one answered
    by B's (B's address, or the VIP by a pid in B);
  - A's copy answers nothing from lease_ms after the stop until primaryd
    runs again (the lease keeper stopped it; a tolerance of 150 ms for the
    last heartbeat's age and scheduling);
  - afterwards exactly one copy serves: either A's (the backup did not take
    over; A answers again) or B's (A's primaryd says deposed, A's copy is
    gone, the VIP is on B); the outcome is printed.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

TOLERANCE_S = 0.15


def ok_answers(prober):
    return [a for a in list(prober.attempts) if a[2]]


def one_length(r, binary, certs, net, length):
    tag = f"SIGSTOP {length:g} s"
    with rp.Topology(net) as topo:
        up = rp.bring_up(topo, certs, binary)
        orig = up.service.pid
        probers = {
            "A": rp.Prober(up.dep.client_to(topo.a), "a"),
            "B": rp.Prober(up.dep.client_to(topo.b), "b"),
            "VIP": rp.Prober(up.vip, "v"),
        }
        for p in probers.values():
            p.start()
        try:
            time.sleep(1.0)
            t_stop = time.monotonic()
            os.kill(up.primary.pid, signal.SIGSTOP)
            time.sleep(length)
            t_cont = time.monotonic()
            os.kill(up.primary.pid, signal.SIGCONT)
            time.sleep(4.0)
        finally:
            for p in probers.values():
                p.stop()

        a_answers = ok_answers(probers["A"]) + [x for x in ok_answers(probers["VIP"]) if x[3] == orig]
        b_answers = ok_answers(probers["B"]) + [x for x in ok_answers(probers["VIP"])
                                                if x[3] != orig]
        r.check(f"{tag}: A's copy answered before the stop", any(x[1] < t_stop for x in a_answers),
                "some answers", len(a_answers))
        if b_answers:
            first_b = min(x[1] for x in b_answers)
            last_a = max(x[1] for x in a_answers)
            r.check(f"{tag}: never two copies answering: A's last answer came before B's first",
                    last_a < first_b, f"A's last answer before {first_b - t_stop:.3f} s after the stop",
                    f"A answered until {last_a - t_stop:.3f} s, B from {first_b - t_stop:.3f} s after the stop")
        lease = up.dep.service["lease_ms"] / 1000
        during = [x for x in a_answers if t_stop + lease + TOLERANCE_S < x[0] and x[1] < t_cont]
        r.check(f"{tag}: A's copy answers nothing from the lease's end until primaryd runs again",
                not during, "no answer", f"{len(during)} answers, first sent "
                f"{(during[0][0] - t_stop) if during else 0:.3f} s after the stop")

        after = time.monotonic()
        st_a = up.primary.status_precise()
        try:
            st_b = up.backup.status_precise()
        except cs.TestError:
            st_b = {}
        if b_answers:
            served = "B"
            gone = not up.service.alive()
            r.check(f"{tag}: B serves; A's copy is gone and A's primaryd says deposed",
                    gone and st_a.get("role") == "deposed" and topo.vip_holders() == [topo.b],
                    "A's copy gone, role deposed, VIP on B",
                    f"A's copy alive {not gone}, role {st_a.get('role')}, VIP on {topo.vip_holders()}")
        else:
            served = "A"
            late = [x for x in a_answers if x[0] > t_cont + 1.0]
            r.check(f"{tag}: no takeover, and A's copy serves again after primaryd runs again",
                    late and st_b.get("role") == "backup" and st_a.get("role") == "primary",
                    "answers from A, B role backup, A role primary",
                    f"{len(late)} answers, B role {st_b.get('role')}, A role {st_a.get('role')}")
        log = up.primary.log_text()
        keeper_line = next((l for l in log.splitlines() if "did not run for" in l), "(none)")
        cs.log(f"{tag}: settled with {served} serving ({after - t_stop:.1f} s after the stop); A's "
               f"role {st_a.get('role')}, B's role {st_b.get('role')}; primaryd said: {keeper_line}")


def main(r, *lengths):
    lengths = [float(x) for x in lengths] or [0.6, 1.1, 1.5, 3.0]
    binary = cs.build_workload("kvserver", "cgo")
    import random
    net = random.randint(1, 254)
    certs = rp.make_certs(f"10.213.{net}.2")
    for length in lengths:
        try:
            one_length(r, binary, certs, net, length)
        except cs.TestError as e:
            r.fail(f"SIGSTOP {length:g} s: {e}")


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
