#!/usr/bin/env python3
"""Role swap together with the etcd witness: the owner key follows the serving host.

Usage: test_roles_witness.py ROUNDS      (e.g. `test_roles_witness.py 3`)

The hosts and daemons of tests/test_roles.py (both daemons on A and B, one
certificate per host, the same service file with `role_swap = on`), plus one etcd member in a namespace of its own on the same switch
(tests/test_witness.py's WitnessTopology) named by `witness =`, with
test_witness.py's timing (witness_ttl_ms 1000, failover_timeout_ms 2000).
Both files' helpers are imported, not copied.

Each round fails over twice (test_roles.Run.failover: write, the serving
host dies, the other's backupd restores, only after taking the key, and its
primaryd adopts, the dead host's daemons come back as standby and backup).
After each takeover and adopt (before the dead host is back), and again once
the old host is back and receives epochs:

  - the key /checksync/NAME/owner (etcdctl get) names the serving host;
  - the serving host's primaryd says it holds the key (witness_held 1) and
    its backupd, which handed the service off, holds nothing (witness_held 0):
    else a handover or stop of that primaryd could not release the key;
  - exactly one kvserver runs in A and B (Run.one_copy), every acknowledged
    write is served by the new host.

Output commit is off: an adopted service outside systemd has no cgroup of its
own (it stays in backupd's), so output commit cannot be in force for it; a
write counts as acknowledged once the epoch after it is (Run.write).

Then a planned handover (test_roles.handover) from the serving host: the
key follows it the same way.

At the start, A (the first host) holds the key through its primaryd. At the
end every write acknowledged before every kill is served, and no copy was
restored twice (one takeover per failover, of increasing epochs).
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402
import test_roles as roles  # noqa: E402
import test_witness as wit  # noqa: E402

KEY_S = 10  # from the adopt to the key moved onto the adopting primaryd's lease


def witness_held(sock):
    """The witness_held figure of the daemon at status socket SOCK (None without one)."""
    for svc, _, name, _, value in rp.status_socket_rows(sock):
        if svc == rp.SERVICE and name == "witness_held":
            return None if value is None or value != value else int(value)
    return None


def key_follows(r, topo, serving, other, tag):
    """The key names SERVING, held by its primaryd and not by its backupd; OTHER holds nothing."""
    def settled():
        return (topo.owner() == serving.name and witness_held(serving.sock["primary"]) == 1
                and witness_held(serving.sock["backup"]) == 0)
    try:
        rp.wait_for(f"{tag}: the key to be {serving}'s primaryd's alone", settled, KEY_S, 0.1)
    except cs.TestError:
        pass  # the checks below say what differs
    owner = topo.owner()
    r.check(f"{tag}: the owner key names the serving host {serving.name}", owner == serving.name,
            serving.name, owner)
    held = witness_held(serving.sock["primary"])
    r.check(f"{tag}: {serving}'s primaryd holds the key (witness_held)", held == 1, 1, held)
    held = witness_held(serving.sock["backup"])
    r.check(f"{tag}: {serving}'s backupd, which handed the service off, holds no key", held == 0, 0,
            held)
    if other.primary:
        held = witness_held(other.sock["primary"])
        r.check(f"{tag}: {other}'s standby primaryd holds no key", held == 0, 0, held)


class Host(roles.Host):
    """test_roles.Host whose start() first runs before_start (Run.failover restarts the dead
    host right after the adopt: the key is checked there, before the dead host is back)."""

    before_start = None

    def start(self):
        if self.before_start:
            self.before_start()
        super().start()


def main(r):
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    binary = cs.build_workload("kvserver", "cgo")
    with wit.WitnessTopology(1) as topo:
        topo.start_etcd()
        a_ip, b_ip = topo.addr[topo.a], topo.addr[topo.b]
        ca, certs = roles.make_host_certs({"a.test": a_ip, "b.test": b_ip})
        keys = dict(rp.TIMING, **wit.TIMING, name=rp.SERVICE,
                    command=f"{binary} -addr 0.0.0.0:{rp.PORT}", executable=binary,
                    role_swap="on", hosts=f"a.test={a_ip}:{rp.BACKUP_PORT} b.test={b_ip}:{rp.BACKUP_PORT}",
                    output_commit="off", witness=topo.urls(), witness_ttl_ms=wit.TTL_MS)
        text = "# written by the test\n[service]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
        root = cs.run_dir("roles-witness")
        a = Host(topo, topo.a, "a.test", root, ca, certs["a.test"], text)
        b = Host(topo, topo.b, "b.test", root, ca, certs["b.test"], text)
        # Output commit off: a restored service outside systemd stays in backupd's
        # cgroup, where output commit cannot hold it (README); an acknowledged write
        # is one whose next epoch the backup acknowledged (Run.write waits for it).
        run = roles.Run(r, topo, (a, b), binary, False)
        a.start()
        b.start()
        rp.wait_for("A's primaryd to have epoch 1 acknowledged by B",
                    lambda: a.primary.status().get("acked", 0) >= 1, 30, 0.1)
        run.one_copy("at the start")
        key_follows(r, topo, a, b, "at the start")
        t0 = time.monotonic()
        for n in range(1, rounds + 1):
            for dead, alive, tag in ((a, b, f"round {n}, A -> B"), (b, a, f"round {n}, B -> A")):
                # Run.failover: takeover, adopt, the dead host back as backup receiving epochs
                dead.before_start = (lambda d=dead, al=alive, t=tag:
                                     key_follows(r, topo, al, d, f"{t}, after the takeover and adopt"))
                run.failover(dead, alive, tag)
                dead.before_start = None
                key_follows(r, topo, alive, dead, f"{tag}, after the adopt and {dead} back")
        cs.log(f"{rounds} rounds ({run.failovers} failovers) in {time.monotonic() - t0:.0f} s; "
               f"kill to adopted primary: {rp.stats(run.times)}")
        # A planned handover (test_roles.handover): the handing primaryd releases the key, the
        # other host's backupd takes it to restore and hands it to its primaryd
        serving = run.one_copy("before the handover")[0]
        other = b if serving is a else a
        roles.handover(run, serving, other)
        key_follows(r, topo, other, serving, "after the handover")
        roles.check_end(r, run, a, b)


if __name__ == "__main__":
    cs.run(main)
