#!/usr/bin/env python3
"""A takeover cannot hang: a full 1 MiB pipe and a file that became a FIFO.

kvserver is started by primaryd through a small wrapper that gives it both
ends of a pipe whose 1 MiB buffer is full, and a data file open write-only.
Once epochs are acknowledged, the data file is replaced by a FIFO (opening a
FIFO write-only blocks until a reader comes, which before this fix held
backupd's event loop forever) and host A dies (primaryd and the service
SIGKILLed). Expected:
- the first takeover fails with a clear error naming the descriptor and the
  FIFO, within failover_timeout_ms plus the restore's deadline; backupd
  stays responsive (status answers), says it keeps the image and will try
  again, is not "serving", and runs no kvserver in B;
- once the file is back, the next attempt restores the service: the same
  instance answers through the VIP with the writes A acknowledged, and its
  pipe holds the 1 MiB it held (restored without blocking, the pipe sized
  first).

Then two more deployments, whose backupd starts with a restore that hangs:
an injected call in the husk (CHECKSYNC_FAULT=restore-fds:3:hang, the husk
traced), or the hook that places the husk in its scope or cgroup
(restore-hooks:1:hang, the husk forked but not yet traced: it waits for the
hook to end before it execs the service). Once A is dead and B reports
"restoring", backupd is SIGKILLed mid-restore. No process may be left in B,
then or a second later (its restorer dies with it, the husk with the
restorer: a husk that went on to exec the service on its own would serve an
empty copy and hold the service's port, and the next restore would fail
with "Address already in use"), and backupd, restarted without the fault,
must say the restore was under way, go back to backup (not "serving pid 0")
and take over with A's writes.
"""

import ctypes
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

PIPE_BYTES = 1 << 20
RESTORER_DEADLINE_S = 20  # RESTORER_DEADLINE_MS in backupd/restorer.h
MARGIN_S = 5
FIONREAD, F_GETPIPE_SZ = 0x541B, 1032

WRAPPER = """\
import fcntl, json, os, sys
with open(os.path.join(os.path.dirname(sys.argv[0]), "args.json")) as f:
    sys.argv[1:] = json.load(f)
rd, wr = os.pipe()
fcntl.fcntl(wr, 1031, {size})  # F_SETPIPE_SZ
os.set_blocking(wr, False)
os.write(wr, b"p" * {size})
os.set_blocking(wr, True)
df = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
for fd in (rd, wr, df):
    os.set_inheritable(fd, True)
with open(sys.argv[1] + ".fds", "w") as f:
    f.write(f"{{rd}} {{wr}} {{df}}")
os.execv(sys.argv[2], sys.argv[2:])
"""


def pipe_buffered(pid, fd):
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, pid, 0)  # pidfd_open
    if pidfd < 0:
        raise cs.TestError(f"pidfd_open({pid}): {os.strerror(ctypes.get_errno())}")
    try:
        copy = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        if copy < 0:
            raise cs.TestError(f"pidfd_getfd({pid}, {fd}): {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(pidfd)
    try:
        n = int.from_bytes(fcntl.ioctl(copy, FIONREAD, b"\0\0\0\0"), "little")
        return n, fcntl.fcntl(copy, F_GETPIPE_SZ)
    finally:
        os.close(copy)


def bring_up(topo, certs, binary, wrapper, datafile):
    """The service is started by the test in A (primaryd cannot follow a command that
    execs another program) and attached to by pid_file."""
    dep = rp.Deployment(topo, certs, binary)
    with open(os.path.join(os.path.dirname(wrapper), "args.json"), "w") as f:
        json.dump([datafile, binary, "-addr", f"0.0.0.0:{dep.port}"], f)
    logpath = os.path.join(os.path.dirname(wrapper), "service.log")
    with open(logpath, "wb") as logf:
        popen = subprocess.Popen(cs.netns_prefix(topo.a) + ["/usr/bin/python3", wrapper],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    service = cs.Proc(popen.pid, "kvserver started by the test in A", popen, logpath)
    rp.wait_for("the wrapper to exec kvserver",
                lambda: os.readlink(f"/proc/{popen.pid}/exe") == binary, 20)
    pid_file = os.path.join(os.path.dirname(wrapper), "kvserver.pid")
    with open(pid_file, "w") as f:
        f.write(f"{popen.pid}\n")
    for side in ("a", "b"):
        dep.write_service(side, command=None, pid_file=pid_file)
    backup = dep.start_backupd()
    vip = dep.vip_client()
    primary = dep.start_primaryd()
    state = cs.wait_serving(vip, service)
    rp.wait_acked(primary, backup, at_least=1)
    return rp.Up(topo, dep, backup, primary, service, vip, state)


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    base = tempfile.mkdtemp(prefix="cs-hang-", dir="/tmp")  # short: it goes in a config line
    try:
        scenario(r, binary, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    killed_mid_restore(r, binary, "restore-fds:3:hang", "killed mid-restore")
    killed_mid_restore(r, binary, "restore-hooks:1:hang", "killed while the husk is placed")


def procs_in(topo, host):
    """Every process in HOST's network namespace, as "pid exe" (zombies have none)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and topo.in_netns(int(pid), host):
            try:
                out.append(f"{pid} {os.readlink(f'/proc/{pid}/exe')}")
            except OSError:
                continue
    return out


def tasks_in(topo, host, binary):
    """Every task of any process running BINARY in HOST's namespace, as pid/tid."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or not topo.in_netns(int(pid), host):
            continue
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                if os.readlink(f"/proc/{pid}/task/{tid}/exe") == binary:
                    out.append(f"{pid}/{tid}")
        except OSError:
            continue
    return out


def killed_mid_restore(r, binary, fault, tag):
    topo = rp.Topology()
    certs = rp.make_certs(f"10.213.{topo.net}.2")
    with topo:
        os.environ["CHECKSYNC_FAULT"] = fault  # backupd's restores hang (5 s, or to the deadline)
        try:
            up = rp.bring_up(topo, certs, binary)
        finally:
            del os.environ["CHECKSYNC_FAULT"]
        writer = rp.Writer(up.vip)
        writer.start()
        try:
            writer.wait_acks(30)
            rp.wait_acked(up.primary, up.backup, at_least=3)
            time.sleep(1.0)  # writes acknowledged well before the kill, for check_takeover
            t_kill = rp.kill_now(up.service, up.primary.proc)
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)
            role = rp.wait_for("backupd to report restoring",
                               lambda: up.backup.status().get("role") == "restoring", 15)
            r.check(f"{tag}: backupd reports 'restoring' while its restore hangs", role)
            up.backup.proc.kill9()
            deadline = time.monotonic() + 3
            while procs_in(topo, topo.b) and time.monotonic() < deadline:
                time.sleep(0.05)
            gone = not procs_in(topo, topo.b)
            time.sleep(1.0)  # a husk that outlived its restorer would exec the service by now
            left = procs_in(topo, topo.b) + tasks_in(topo, topo.b, binary)
            r.check(f"{tag}: nothing of the restore is left in B once backupd is killed, nor a "
                    f"second later", gone and not left, "no process in B",
                    left or "a process in B 3 s after the kill, gone since")
            up = up._replace(backup=up.dep.start_backupd())
        except BaseException:
            writer.stop()
            raise
        rp.check_takeover(r, f"{tag}: takeover by the restarted backupd", up, writer, t_kill)
        log = up.backup.log_text()
        r.check(f"{tag}: the restarted backupd saw the restore under way and went back to backup "
                f"instead of 'serving pid 0'", "a takeover's restore was under way" in log,
                "'a takeover's restore was under way ... back to backup'", log[-1500:])


def scenario(r, binary, base):
    wrapper = os.path.join(base, "wrapper.py")
    with open(wrapper, "w") as f:
        f.write(WRAPPER.format(size=PIPE_BYTES))
    datafile = os.path.join(base, "data")
    with open(datafile, "wb") as f:
        f.write(b"data\n")
    topo = rp.Topology()
    certs = rp.make_certs(f"10.213.{topo.net}.2")
    with topo:
        up = bring_up(topo, certs, binary, wrapper, datafile)
        with open(datafile + ".fds") as f:
            pipe_rd, _, data_fd = (int(x) for x in f.read().split())
        buffered, _ = pipe_buffered(up.service.pid, pipe_rd)
        r.require("the service holds a full 1 MiB pipe", buffered == PIPE_BYTES, PIPE_BYTES, buffered)
        writer = rp.Writer(up.vip)
        writer.start()
        failover_s = up.dep.service["failover_timeout_ms"] / 1000
        try:
            writer.wait_acks(30)
            rp.wait_acked(up.primary, up.backup, at_least=3)
            time.sleep(1.0)  # writes acknowledged well before the kill, for check_takeover
            os.rename(datafile, datafile + ".saved")
            os.mkfifo(datafile)
            t_kill = rp.kill_now(up.service, up.primary.proc)
            up.primary.proc.wait_gone(5)
            up.service.wait_gone(5)

            limit = failover_s + RESTORER_DEADLINE_S + MARGIN_S
            line = None
            while time.monotonic() - t_kill < limit and line is None:
                m = re.search(r".*takeover failed.*", up.backup.log_text())
                line = m.group(0) if m else None
                time.sleep(0.1)
            took = time.monotonic() - t_kill
            log = up.backup.log_text()
            r.require(f"the first takeover fails within {limit:.0f}s of A's death",
                      line is not None, "a 'takeover failed' line", f"none after {took:.1f}s; log:\n"
                      f"{up.backup.log_tail()}")
            r.check("its error names the descriptor and the FIFO",
                    re.search(rf"restore step files: fd {data_fd}: {re.escape(datafile)} is now a "
                              rf"FIFO", log) is not None,
                    f"'restore step files: fd {data_fd}: {datafile} is now a FIFO'", log[-1500:])
            r.check("the backup says it keeps the image and tries again",
                    "the image is kept; trying again" in line, "'the image is kept; trying "
                    "again'", line)
            st = up.backup.status()
            serving = rp.running_in(topo, topo.b, binary)
            r.check("after the failed attempt backupd answers status, is not serving and runs no "
                    "kvserver", st.get("role") != "serving" and not serving,
                    "role not serving, no kvserver in B", f"role {st.get('role')}, kvservers {serving}")
            cs.log(f"first takeover failed {took:.1f}s after the kill: {line}")

            os.unlink(datafile)
            os.rename(datafile + ".saved", datafile)
        except BaseException:
            writer.stop()
            raise
        rp.check_takeover(r, "takeover after the file is back", up, writer, t_kill)
        restored = rp.running_in(topo, topo.b, binary)
        if len(restored) == 1:
            buffered, size = pipe_buffered(restored[0], pipe_rd)
            r.check(f"the restored service's pipe (fd {pipe_rd}) holds its 1 MiB",
                    buffered == PIPE_BYTES and size >= PIPE_BYTES,
                    f"{PIPE_BYTES} bytes buffered", f"{buffered} bytes, pipe size {size}")


if __name__ == "__main__":
    cs.run(main)
