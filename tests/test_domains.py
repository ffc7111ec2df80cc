#!/usr/bin/env python3
"""One service, one failure domain: one service's death affects only that service.

Usage: test_domains.py N     (N services on one daemon pair; the suite runs 2 and 5)

Hosts as namespaces (tests/lib/replication.py). One checksync-primaryd in A
guards N kvservers kv0..kv{N-1} (ports 8080+i), one checksync-backupd in B
backs them all up. A client in C writes sequential keys to each service
through A's own address. When every service has an acknowledged epoch, the
test SIGKILLs one service (kv1, never the first: a reaper that loops per
service would see the first one's exit and miss the others') and checks:
  - primaryd is still running, its status says the killed service failed and
    every other one is primary;
  - B takes over the killed service: its status says serving, and kv1 answers
    on B's address with the original's instance id and every write acknowledged
    well before the kill;
  - every other service keeps replicating: its acknowledged epoch keeps growing
    for 3 s after the takeover, it is still answered by its original pid in A,
    B says backup for it and runs no copy of it;
  - primaryd logged the death, naming the service.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

VICTIM = 1
GROW_S = 3.0       # the others must keep replicating this long after the takeover
MIN_GROWTH = 10    # epochs acknowledged in GROW_S (30 expected at 100 ms)


def name(i):
    return f"kv{i}"


def write_services(dep, binary, n):
    for side in ("a", "b"):
        os.unlink(dep.service_file[side])
        for i in range(n):
            text = dep.service_text(name=name(i), command=f"{binary} -addr 0.0.0.0:{rp.PORT + i}")
            rp.write_file(os.path.join(dep.dir, side, "services", f"{name(i)}.conf"), text)


def acked(daemon, svc):
    return daemon.status_precise(svc).get("acked") or 0


def all_acked(primary, backup, n, at_least):
    def ok():
        if not primary.alive() or not backup.alive():
            raise cs.TestError(f"a daemon exited; primaryd log:\n{primary.log_tail()}")
        return all(acked(primary, name(i)) >= at_least for i in range(n))
    rp.wait_for(f"every one of the {n} services with epoch {at_least} acknowledged", ok, 60, 0.2)


def main(r, n):
    n = int(n)
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        dep = rp.Deployment(topo, certs, binary, hook=False)
        write_services(dep, binary, n)
        backup = dep.start_backupd()
        primary = dep.start_primaryd()
        clients = [cs.Client(topo.addr[topo.a], rp.PORT + i, netns=topo.c) for i in range(n)]
        states = [rp.wait_for(f"{name(i)} answering on A", lambda c=c: c.state(timeout=2), 30)
                  for i, c in enumerate(clients)]
        cs.log(f"{topo}; services " + ", ".join(f"{name(i)} pid {s['pid']}" for i, s in enumerate(states)))
        all_acked(primary, backup, n, 1)

        writers = [rp.Writer(c, interval=0.05) for c in clients]
        for w in writers:
            w.start()
        try:
            for w in writers:
                w.wait_acks(10)
            time.sleep(1.0)
            victim = cs.Proc(states[VICTIM]["pid"], f"{name(VICTIM)} started by primaryd")
            t_kill = rp.kill_now(victim)
            victim.wait_gone(5)
            writers[VICTIM].stop()
            durable = writers[VICTIM].acked(before=t_kill - (dep.service["epoch_interval_ms"] / 1000 + rp.SLACK_S))

            def b_serves():
                st = backup.status_precise(name(VICTIM))
                return st if st.get("role") == "serving" else None
            try:
                rp.wait_for(f"B serving {name(VICTIM)}", b_serves, 30, 0.1)
                r.check(f"B took over {name(VICTIM)} after it was killed", True)
            except cs.TestError as e:
                r.fail(f"B took over {name(VICTIM)} after it was killed: {e}; primaryd log:\n"
                       f"{primary.log_tail()}\nbackupd log:\n{backup.log_tail()}")
                raise
            t_over = time.monotonic()
            cs.log(f"B serves {name(VICTIM)} {1000 * (t_over - t_kill):.0f} ms after the kill")
            r.check("primaryd still runs after one service died", primary.alive(), "alive",
                    f"exited: {primary.log_tail(800)}")

            before = {i: acked(primary, name(i)) for i in range(n) if i != VICTIM}
            time.sleep(GROW_S)
            after = {i: acked(primary, name(i)) for i in range(n) if i != VICTIM}
        finally:
            for w in writers:
                w.stop()

        for i in before:
            r.check(f"{name(i)} keeps replicating after {name(VICTIM)} failed over "
                    f"(acked epochs in {GROW_S:g} s)", after[i] - before[i] >= MIN_GROWTH,
                    f">= {MIN_GROWTH}", f"{before[i]} -> {after[i]}")
            r.check(f"{name(i)}: its writer saw no error after the kill", writers[i].errors == 0, 0,
                    f"{writers[i].errors} (last: {writers[i].last_error})")
            st = clients[i].state(timeout=5)
            r.check(f"{name(i)} is still answered by its original process in A",
                    st["pid"] == states[i]["pid"] and st["instance"] == states[i]["instance"],
                    f"pid {states[i]['pid']}", f"pid {st['pid']}")
            role_a = primary.status_precise(name(i)).get("role")
            role_b = backup.status_precise(name(i)).get("role")
            r.check(f"{name(i)}: status says primary on A and backup on B",
                    (role_a, role_b) == ("primary", "backup"), ("primary", "backup"), (role_a, role_b))

        role = primary.status_precise(name(VICTIM)).get("role")
        r.check(f"primaryd status says {name(VICTIM)} failed", role == "failed", "failed", role)
        restored = rp.running_in(topo, topo.b, binary)
        r.check("B runs exactly one kvserver (the victim's copy)", len(restored) == 1, 1, restored)
        on_b = cs.Client(topo.addr[topo.b], rp.PORT + VICTIM, netns=topo.c)
        st = on_b.state(timeout=10)
        r.check(f"{name(VICTIM)} on B is the original's copy (same instance id)",
                st["instance"] == states[VICTIM]["instance"], states[VICTIM]["instance"], st["instance"])
        problems = cs.kv_check(on_b, durable, each=False)
        r.check(f"{name(VICTIM)} on B holds the {len(durable)} writes acknowledged well before the kill",
                durable and not problems, "all", cs.summarize(problems))
        # "ended" when a capture seizing it as it died took its exit status (guard.c exit_cb)
        r.check(f"primaryd logged {name(VICTIM)}'s death",
                re.search(rf"{name(VICTIM)}: the service \(pid {states[VICTIM]['pid']}\) "
                          r"(was killed by signal 9|ended)", primary.log_text()),
                "a line naming it", primary.log_tail(600))


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
