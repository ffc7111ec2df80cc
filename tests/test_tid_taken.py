#!/usr/bin/env python3
"""Restore when the old pid is free but one of the old thread ids is taken.

Seen in the systemd suite: in a container's small pid namespace the restorer
itself (pid 48) held a thread id of the image (48), and clone3(set_tid) of
that thread failed with EEXIST ("restore step threads: thread 48: cannot
recreate it (clone3): File exists"), failing a planned handover.

The test dumps kvserver with keys written, kills it, has a `sleep` take one
of its thread ids (through /proc/sys/kernel/ns_last_pid), restores, and
checks that the restored process has its old pid, answers as the original
(same instance) and holds every key, with that thread under a new id.

Usage: test_tid_taken.py   (meson test tid-taken; root)
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402


def occupy(tid, tries=50):
    """A `sleep` running as pid TID (the next pid after ns_last_pid = TID - 1), or None."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(tid - 1))
        p = subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL)
        if p.pid == tid:
            return cs.Proc(p.pid, f"sleep holding thread id {tid}", p)
        p.kill()
        p.wait()
    return None


def scenario(r):
    binary = cs.build_workload("kvserver", "cgo")
    wl = cs.start_workload(binary)
    written = cs.kv_write(wl.client, "t", 50, os.getpid(), retries=3)
    instance = wl.client.state()["instance"]
    tids = sorted(int(t) for t in os.listdir(f"/proc/{wl.proc.pid}/task") if int(t) != wl.proc.pid)
    image = cs.run_dir("image")
    cs.dump(wl.proc.pid, image)
    wl.proc.kill9()
    holder = occupy(tids[-1])
    if holder is None:
        raise cs.TestError(f"could not get a process to run as pid {tids[-1]} (other processes "
                           f"took it first)")
    restored = cs.restore(image)
    st = wl.client.state()
    r.check(f"restored with its old pid {wl.proc.pid} although thread id {tids[-1]} is taken (by "
            f"pid {holder.pid})", st["pid"] == wl.proc.pid == restored.pid, wl.proc.pid, st["pid"])
    r.check("the restored process is the original's copy (same instance id)", st["instance"] == instance,
            instance, st["instance"])
    problems = cs.kv_check(wl.client, written, each=False)
    r.check(f"all {len(written)} keys written before the dump are there", not problems, "all",
            cs.summarize(problems))
    new = sorted(int(t) for t in os.listdir(f"/proc/{restored.pid}/task"))
    r.check(f"the threads run (ids {new}), none as {tids[-1]}", tids[-1] not in new and len(new) > 1,
            f"no {tids[-1]}", new)
    restored.kill9()
    holder.kill9()


if __name__ == "__main__":
    cs.run(scenario)
