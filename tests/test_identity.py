#!/usr/bin/env python3
"""The restored process has the identity it had: uids, gids, groups, capabilities, NoNewPrivs.

Usage: test_identity.py [SCENARIO...]   (default: nobody, nocaps, ambient; or: failover)

Each scenario starts kvserver under `setpriv` with another identity (setpriv
execs it in place, so the pid is the workload's), writes keys into it, dumps
it, kills it, restores it, and checks on every thread of the restored
process, from /proc/PID/task/TID/status, that Uid, Gid (all four), Groups,
CapInh/CapPrm/CapEff/CapBnd/CapAmb and NoNewPrivs are what the original's
threads had, and that the scenario's identity really is in force (so the
test means something even if the original were root); then that every write
acknowledged before the dump reads back, and that the restored process takes
new writes.

  nobody   setpriv --reuid=nobody --regid=nogroup --clear-groups
  nocaps   root with every capability dropped and NoNewPrivs:
           setpriv --inh-caps=-all --bounding-set=-all --no-new-privs
  ambient  nobody with supplementary groups and one ambient capability
           (net_bind_service in every set, the bounding set cut down to it)

  failover the same through the daemons: a kvserver started as nobody in host
           A, protected by attaching to it (pid_file), replicated to B; A's
           primaryd and the service are killed; the copy B restores has the
           original's identity on every thread and every write acknowledged
           well before the kill.

Dumping a service that runs as nobody also checks that capture needs no
privilege root may lack (rlimits of another uid through prlimit() need
CAP_SYS_RESOURCE; capture reads /proc/PID/limits instead).
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

ORIGINAL, RESTORED = 0, 1
FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")
NET_BIND = "0000000000000400"
ZERO = "0000000000000000"

SCENARIOS = {
    "nobody": (["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"],
               {"Uid": "65534 65534 65534 65534", "Gid": "65534 65534 65534 65534", "Groups": "",
                "CapPrm": ZERO, "CapEff": ZERO, "NoNewPrivs": "0"}),
    "nocaps": (["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"],
               {"Uid": "0 0 0 0", "CapInh": ZERO, "CapPrm": ZERO, "CapEff": ZERO, "CapBnd": ZERO,
                "CapAmb": ZERO, "NoNewPrivs": "1"}),
    "ambient": (["setpriv", "--reuid=nobody", "--regid=nogroup", "--groups=4242,4243",
                 "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service",
                 "--bounding-set=-all,+net_bind_service"],
                {"Uid": "65534 65534 65534 65534", "Groups": "4242 4243", "CapInh": NET_BIND,
                 "CapPrm": NET_BIND, "CapEff": NET_BIND, "CapBnd": NET_BIND, "CapAmb": NET_BIND}),
}


def identity(pid):
    """{tid: {field: value}} for every thread of PID (values with whitespace normalized)."""
    out = {}
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        fields = {}
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in FIELDS:
                        fields[key] = " ".join(value.split())
        except OSError:
            continue  # the thread exited meanwhile
        out[tid] = fields
    return out


def check_identity(r, when, proc, want_all, want_scenario):
    """Every thread of PROC has the identity WANT_ALL (the original's) and WANT_SCENARIO."""
    ids = identity(proc.pid)
    r.check(f"{when}: {proc} has threads", len(ids) > 1, "> 1 thread", len(ids))
    for field in FIELDS:
        seen = sorted({t.get(field) for t in ids.values()}, key=str)
        r.check(f"{when}: {field} of every one of {len(ids)} threads is the original's "
                f"{want_all[field]!r}", seen == [want_all[field]], [want_all[field]], seen)
    for field, value in want_scenario.items():
        seen = sorted({t.get(field) for t in ids.values()}, key=str)
        r.check(f"{when}: {field} is {value!r} on every thread, as the scenario set it",
                seen == [value], [value], seen)


def scenario(r, name, binary):
    prefix, expected = SCENARIOS[name]
    cs.log(f"scenario {name}: {' '.join(prefix)}")
    w = cs.start_workload(binary, prefix=prefix)
    load = cs.KVWriter(w.client)
    load.start()
    load.wait_acks(200)

    original = identity(w.pid)
    leader = original[w.pid]
    r.require(f"{name}: the original's threads all have one identity (setpriv set it before exec)",
              all(t == leader for t in original.values()), leader,
              [t for t in original.values() if t != leader][:1])
    check_identity(r, f"{name}: original", w.proc, leader, expected)

    image = os.path.join(cs.run_dir(f"identity-{name}"), "image")
    t_dump = time.monotonic()
    report = cs.dump(w.pid, image)
    cs.log(f"dump: {cs.describe_report(report)}")
    w.proc.check_left_running(r, "the dump")

    load.pause()
    w.proc.kill9()
    restored = cs.restore(image, what=f"restored {name} kvserver")
    load.resume(RESTORED)
    cs.wait_serving(w.client, restored)
    check_identity(r, f"{name}: restored", restored, leader, expected)

    durable = load.acked(phase=ORIGINAL, before=t_dump)
    problems = cs.kv_check(w.client, durable, each=False)
    r.check(f"{name}: all {len(durable)} writes acknowledged before the dump read back exactly",
            not problems, "none missing or different", cs.summarize(problems))
    load.wait_acks(50, phase=RESTORED)
    r.check(f"{name}: the restored process takes new writes",
            len(load.acked(phase=RESTORED)) >= 50, ">= 50", len(load.acked(phase=RESTORED)))
    load.stop()
    check_identity(r, f"{name}: after load", restored, leader, expected)
    restored.kill9()


def failover(r, binary):
    prefix, expected = SCENARIOS["nobody"]
    topo = rp.Topology()
    certs = rp.make_certs(f"10.213.{topo.net}.2")
    with topo:
        w = cs.start_workload(binary, port=rp.PORT, host=topo.addr[topo.a],
                              listen=f"0.0.0.0:{rp.PORT}", netns=topo.a, prefix=prefix)
        original = identity(w.pid)
        leader = original[w.pid]
        check_identity(r, "failover: original in A", w.proc, leader, expected)
        pid_file = os.path.join(cs.run_dir("pidfile"), "kvserver.pid")
        with open(pid_file, "w") as f:
            f.write(f"{w.pid}\n")
        dep = rp.Deployment(topo, certs, binary, command=None, pid_file=pid_file)
        backup = dep.start_backupd()
        primary = dep.start_primaryd()
        rp.wait_acked(primary, backup, at_least=3)
        r.check("failover: primaryd attached to the nobody service replicates it (epoch >= 3 "
                "acknowledged)", True)
        vip = dep.vip_client()
        up = rp.Up(topo, dep, backup, primary, w.proc, vip, vip.state())
        writer = rp.Writer(vip)
        writer.start()
        try:
            writer.wait_acks(200)
            time.sleep(0.5)  # writes old enough to be in an acknowledged epoch
            t_kill = rp.kill_now(w.proc, primary.proc)
            w.proc.wait_gone(5)
            primary.proc.wait_gone(5)
        except BaseException:
            writer.stop()
            raise
        rp.check_takeover(r, "failover", up, writer, t_kill)
        restored = rp.running_in(topo, topo.b, binary)
        r.require("failover: one kvserver runs in B", len(restored) == 1, "one", restored)
        check_identity(r, "failover: restored in B", cs.Proc(restored[0], "kvserver restored in B"),
                       leader, expected)


def main(r, *names):
    names = names or tuple(SCENARIOS)
    if names == ("failover",):
        failover(r, cs.build_workload("kvserver", "cgo"))
        return
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise cs.TestError(f"unknown scenario(s) {unknown}, expected some of {list(SCENARIOS)}")
    binary = cs.build_workload("kvserver", "cgo")
    for name in names:
        scenario(r, name, binary)


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
