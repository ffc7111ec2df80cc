#!/usr/bin/env python3
"""The restored process has the identity it had: uids, gids, groups, capabilities, NoNewPrivs.

Usage: test_identity.py [SCENARIO...]   (default: all but failover; or: failover)

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
  seccomp  root with no_new_privs and two seccomp filters (tests/lib/
           seccomp_exec.py: uname fails with EPERM, then EACCES; the newer
           wins): Seccomp 2, Seccomp_filters 2, and uname still answers EACCES
  seccomp-nobody  the filters installed by root without no_new_privs, then
           setpriv to nobody: filters the process could not install again
  lacking  a root kvserver restored by a backupd whose bounding set lacks
           cap_net_bind_service: refused at once with one line naming it,
           nothing left running

  failover the same through the daemons: a kvserver started as nobody in host
           A (whose clocks run 100000 s ahead: a time namespace), protected by
           attaching to it (pid_file), replicated to B; A's primaryd and the
           service are killed; the copy B restores has the original's identity
           on every thread, every write acknowledged well before the kill, and
           clocks that carry on from A's.

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
FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
          "Seccomp", "Seccomp_filters")
SECCOMP_EXEC = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib",
                                             "seccomp_exec.py")]
EACCES = 13
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
    # Two filters making uname fail with EPERM, then EACCES: the newer wins, so
    # uname's EACCES shows both are there, in their order.
    "seccomp": (SECCOMP_EXEC + ["--nnp", "1", str(EACCES), "--"],
                {"Uid": "0 0 0 0", "NoNewPrivs": "1", "Seccomp": "2", "Seccomp_filters": "2"}),
    # Installed as root without no_new_privs, then setpriv drops to nobody: the
    # process holds filters it could not install itself any more.
    "seccomp-nobody": (SECCOMP_EXEC + ["1", str(EACCES), "--", "setpriv", "--reuid=nobody",
                                       "--regid=nogroup", "--clear-groups"],
                       {"Uid": "65534 65534 65534 65534", "CapEff": ZERO, "NoNewPrivs": "0",
                        "Seccomp": "2", "Seccomp_filters": "2"}),
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


def proc_owner(pid):
    """The owner of /proc/PID/status: the process's uid while it is dumpable, root when not."""
    return os.stat(f"/proc/{pid}/status").st_uid


def check_identity(r, when, proc, want_all, want_scenario):
    """Every thread of PROC has the identity WANT_ALL (the original's) and WANT_SCENARIO."""
    euid = int(want_all["Uid"].split()[1])
    r.check(f"{when}: /proc/{proc.pid}/status belongs to uid {euid} (the process is dumpable, as it was)",
            proc_owner(proc.pid) == euid, euid, proc_owner(proc.pid))
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
    uname = w.client.json("/uname")["errno"]
    want_uname = EACCES if "Seccomp" in expected else 0
    r.require(f"{name}: uname in the original answers errno {want_uname}", uname == want_uname,
              want_uname, uname)

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
    uname = w.client.json("/uname")["errno"]
    r.check(f"{name}: uname in the restored process answers errno {want_uname}, as in the original",
            uname == want_uname, want_uname, uname)

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


# Host A's clocks, as if it had booted 100000 s before B: `unshare --time` without --fork
# execs the rest in place, and the exec enters the new time namespace (same pid).
A_CLOCKS = 100000


def monotonic_offset(pid):
    """The CLOCK_MONOTONIC offset (s, fractional) of PID's time namespace."""
    with open(f"/proc/{pid}/timens_offsets") as f:
        for line in f:
            name, sec, nsec = line.split()
            if name == "monotonic":
                return int(sec) + int(nsec) / 1e9
    return 0.0


def failover(r, binary):
    prefix, expected = SCENARIOS["nobody"]
    prefix = ["unshare", "--time", "--monotonic", str(A_CLOCKS), "--boottime", str(A_CLOCKS)] + prefix
    topo = rp.Topology()
    certs = rp.make_certs(f"10.213.{topo.net}.2")
    with topo:
        w = cs.start_workload(binary, port=rp.PORT, host=topo.addr[topo.a],
                              listen=f"0.0.0.0:{rp.PORT}", netns=topo.a, prefix=prefix)
        original = identity(w.pid)
        leader = original[w.pid]
        check_identity(r, "failover: original in A", w.proc, leader, expected)
        r.require(f"failover: the original's clocks run {A_CLOCKS} s ahead of B's",
                  monotonic_offset(w.pid) == A_CLOCKS, A_CLOCKS, monotonic_offset(w.pid))
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
        # Its clocks carry on from A's: offset = A's clock at the last epoch + time away - B's now.
        off = monotonic_offset(restored[0])
        r.check(f"failover: the copy in B runs in a time namespace whose clocks carry on from A's "
                f"({A_CLOCKS} s ahead, within 2 s)", abs(off - A_CLOCKS) <= 2, A_CLOCKS, f"{off:.3f}")


def lacking(r, binary):
    """A restorer without a capability the process had refuses, naming it, at once."""
    w = cs.start_workload(binary)
    image = os.path.join(cs.run_dir("identity-lacking"), "image")
    cs.dump(w.pid, image)
    w.proc.kill9()
    t0 = time.monotonic()
    res = cs.run_engine(["setpriv", "--bounding-set=-net_bind_service", cs.backupd(), "restore",
                         "--image", image], timeout=60)
    took = time.monotonic() - t0
    r.check("lacking: a restore by a backupd without cap_net_bind_service fails",
            res.rc != 0, "non-zero exit", res.rc)
    r.check("lacking: ... within 10 s (the threads it had cloned are reaped, not waited on forever)",
            took < 10, "< 10 s", f"{took:.1f} s")
    problem = cs.one_line_error(res.stderr, "checksync-backupd")
    r.check("lacking: ... with one error line naming the capability",
            problem is None and "cap_net_bind_service" in res.stderr and "capability set" in res.stderr,
            "one line naming cap_net_bind_service and its capability set", problem or res.stderr.strip())
    r.check(f"lacking: nothing runs as the image's pid {w.pid} after the failed restore",
            not os.path.exists(f"/proc/{w.pid}"), "no such process", "it exists")


def main(r, *names):
    names = names or tuple(SCENARIOS) + ("lacking",)
    if names == ("failover",):
        failover(r, cs.build_workload("kvserver", "cgo"))
        return
    unknown = [n for n in names if n not in SCENARIOS and n != "lacking"]
    if unknown:
        raise cs.TestError(f"unknown scenario(s) {unknown}, expected some of {list(SCENARIOS)}")
    binary = cs.build_workload("kvserver", "cgo")
    for name in names:
        if name == "lacking":
            lacking(r, binary)
        else:
            scenario(r, name, binary)


if __name__ == "__main__":
    cs.run(main, *sys.argv[1:])
