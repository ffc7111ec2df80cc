#!/usr/bin/env python3
"""A restore that fails, fails fast: one line naming the step and the resource, nothing left.

One image of kvserver (cgo, from a private copy of its binary, so a stray
husk or thread is easy to spot by its executable) taken while it holds, besides
its own descriptors, a regular file and both ends of a pipe whose 1 MiB buffer
is full. The control restore must come back with its keys and with the 1 MiB
still in its pipe (a pipe restored without being sized first would hang).

Then every kind of failure, each expected to end in a non-zero exit, exactly
one line `checksync-backupd: error: restore step STEP: ...` naming the
resource (fd number, mapping address, signal, thread, rlimit), no pid on
stdout, and no task of the private binary left anywhere in /proc/*/task/*:
- the fault point (CHECKSYNC_FAULT=restore-STEP:N, as CRIU_FAULT) at the first
  checked operation of every step, and at every operation of the fds, misc and
  threads steps in turn, until N runs past the last one (the restore then
  succeeds, which proves the sweep reached the end);
- a hang (CHECKSYNC_FAULT=restore-fds:N:hang: the injected call is replaced by
  pause()), which the per-call deadline must end within its 5 s plus a margin;
- crafted conditions: the file behind a descriptor deleted, then replaced by a
  FIFO (refused within the deadline, never opened); the executable replaced by
  a FIFO (never hashed); a hard RLIMIT_NOFILE for the restorer below the
  image's (the limit cannot be raised without CAP_SYS_RESOURCE).
"""

import ctypes
import fcntl
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

BACKUPD = "checksync-backupd"
PIPE_BYTES = 1 << 20
CALL_TIMEOUT_S = 5  # RESTORE_CALL_TIMEOUT_MS in restore/restore.h
MARGIN_S = 5
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
FIONREAD = 0x541B
SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438

# What each step's error must name, besides the step.
RESOURCE = {
    "husk": r"husk|ptrace",
    "rlimits": r"RLIMIT_\w+ of pid \d+",
    "area": r"restorer area at 0x[0-9a-f]+|syscall instruction at 0x[0-9a-f]+",
    "mem": r"(mapping|memory) 0x[0-9a-f]+-0x[0-9a-f]+|0x[0-9a-f]+",
    "fds": r"\bfd \d+|descriptors",
    "signals": r"\bsignal \d+|signal actions",
    "misc": r"umask|personality|directory|mm (fields|map)|auxv",
    "threads": r"\bthread \d+",
    "creds": r"\bthread \d+|credentials|dumpable",
    "unmap-area": r"restorer area at 0x[0-9a-f]+",
    "registers": r"\bthread \d+",
    "release": r"\bthread \d+",
}
SWEEP = ("fds", "misc", "threads")


def tasks_running(binary):
    """Every task (thread) of any process whose executable is BINARY, as 'pid/tid'.
    A leader that has exited can leave threads running: they are looked for by task."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                exe = os.readlink(f"/proc/{pid}/task/{tid}/exe")
            except OSError:
                continue
            if exe in (binary, binary + " (deleted)"):
                found.append(f"{pid}/{tid}")
    return found


def run_restore(image, env=None, preexec=None, timeout=120):
    argv = [cs.backupd(), "restore", "--image", image]
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             env={**os.environ, **(env or {})}, preexec_fn=preexec)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise cs.TestError(f"restore {env or ''} did not finish within {timeout}s (killed)")
        out.seek(0)
        err.seek(0)
        return (rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                time.monotonic() - t0)


def leftovers(binary):
    deadline = time.monotonic() + 2  # a killed husk may still be exiting
    while tasks_running(binary) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = tasks_running(binary)
    for pid in sorted({int(t.split("/")[0]) for t in left}):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    return left


def expect_failure(r, what, image, binary, step, mention, env=None, preexec=None,
                   within=None):
    """Restores IMAGE expecting the named error; returns False if it succeeded instead."""
    rc, out, err, took = run_restore(image, env, preexec)
    if rc == 0 and out.strip().isdigit():
        cs.Proc(int(out.split()[0]), f"restored despite {what}").kill9()
        return False
    problems = []
    if rc == 0:
        problems.append("exit status 0")
    bad = cs.one_line_error(err, BACKUPD)
    if bad:
        problems.append(bad)
    prefix = f"{BACKUPD}: error: restore step {step}: "
    if not err.startswith(prefix):
        problems.append(f"expected the error to start with {prefix!r}, saw {err.strip()!r}")
    if mention and not re.search(mention, err):
        problems.append(f"expected the error to name /{mention}/, saw {err.strip()!r}")
    if out.strip():
        problems.append(f"stdout {out.strip()!r}, expected no pid")
    if within is not None and took > within:
        problems.append(f"took {took:.1f}s, expected at most {within}s")
    left = leftovers(binary)
    if left:
        problems.append(f"tasks left running {binary}: {left}")
    r.check(f"{what}: one line naming step {step} and the resource, nothing left running",
            not problems, "non-zero exit, one named error, no task left", cs.summarize(problems))
    return True


def pidfd_getfd(pid, fd):
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        raise cs.TestError(f"pidfd_open({pid}): {os.strerror(ctypes.get_errno())}")
    try:
        copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            raise cs.TestError(f"pidfd_getfd({pid}, {fd}): {os.strerror(ctypes.get_errno())}")
        return copy
    finally:
        os.close(pidfd)


def pipe_buffered(pid, fd):
    """Bytes waiting in the pipe at fd FD of PID, and the pipe's size."""
    copy = pidfd_getfd(pid, fd)
    try:
        n = fcntl.ioctl(copy, FIONREAD, b"\0\0\0\0")
        return int.from_bytes(n, "little"), fcntl.fcntl(copy, F_GETPIPE_SZ)
    finally:
        os.close(copy)


def start_with_fds(binary, datafile):
    """kvserver holding DATAFILE open read-write and both ends of a full 1 MiB pipe."""
    rd, wr = os.pipe2(os.O_NONBLOCK)
    fcntl.fcntl(wr, F_SETPIPE_SZ, PIPE_BYTES)
    os.write(wr, b"p" * PIPE_BYTES)
    df = os.open(datafile, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(df, b"data")
    port = cs.free_port()
    logpath = os.path.join(cs.run_dir("log"), "kvserver.log")
    with open(logpath, "wb") as logf:
        popen = subprocess.Popen([binary, "-addr", f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                                 stdout=logf, stderr=subprocess.STDOUT, pass_fds=(rd, wr, df))
    for fd in (rd, wr, df):
        os.close(fd)
    proc = cs.Proc(popen.pid, "kvserver with a file and a full pipe", popen, logpath)
    client = cs.Client("127.0.0.1", port)
    cs.wait_serving(client, proc)
    return proc, client, rd, df


def main(r):
    base = cs.run_dir("faults")
    binary = os.path.join(base, "kvserver")
    shutil.copy2(cs.build_workload("kvserver", "cgo"), binary)
    datafile = os.path.join(base, "data")
    proc, client, pipe_rd, data_fd = start_with_fds(binary, datafile)
    writer = cs.KVWriter(client, max_requests=100)
    writer.start()
    writer.join(60)
    keys = writer.acked()
    image = os.path.join(base, "image")
    cs.dump(proc.pid, image)
    proc.kill9()

    # The control: the image restores, with its keys and its full pipe, within the deadline.
    rc, out, err, took = run_restore(image)
    r.require("control: the image restores", rc == 0 and out.strip().isdigit(),
              "exit 0 and a pid", f"exit {rc}, stdout {out.strip()!r}, stderr {err.strip()!r}")
    restored = cs.Proc(int(out.split()[0]), "control restore")
    cs.wait_serving(client, restored)
    problems = cs.kv_check(client, keys, each=False)
    r.check("control: the restored process holds its 100 keys", len(keys) == 100 and not problems,
            "100 keys", f"{len(keys)} acknowledged; {cs.summarize(problems)}")
    buffered, size = pipe_buffered(restored.pid, pipe_rd)
    r.check(f"control: the pipe at fd {pipe_rd} came back full, restored in {took:.1f}s",
            buffered == PIPE_BYTES and size >= PIPE_BYTES and took < CALL_TIMEOUT_S + MARGIN_S,
            f"{PIPE_BYTES} bytes buffered, pipe size >= {PIPE_BYTES}, under "
            f"{CALL_TIMEOUT_S + MARGIN_S}s", f"{buffered} bytes, size {size}, {took:.1f}s")
    restored.kill9()

    # A fault point at the first operation of every step.
    for step, mention in RESOURCE.items():
        reached = expect_failure(r, f"fault at the first operation of step {step}", image, binary,
                                 step, mention, env={"CHECKSYNC_FAULT": f"restore-{step}:1"})
        r.check(f"fault point restore-{step}:1 was reached", reached, "a failed restore",
                "the restore succeeded")

    # Every operation of some steps in turn, until the restore gets past the last one.
    for step in SWEEP:
        n = 1
        while expect_failure(r, f"fault at operation {n} of step {step}", image, binary, step,
                             RESOURCE[step], env={"CHECKSYNC_FAULT": f"restore-{step}:{n}"}):
            n += 1
            if n > 500:
                r.fail(f"step {step}: more than 500 operations, the sweep did not end")
                break
        cs.log(f"step {step}: {n - 1} checked operations, each failing cleanly")
        r.check(f"step {step}: the sweep reached its end (a fault past the last operation "
                f"restores)", 1 < n <= 500, "1 < n <= 500", n)

    # An injected call that never returns: the per-call deadline ends it.
    expect_failure(r, "an injected call that hangs in step fds", image, binary, "fds",
                   r"\bfd \d+.*Connection timed out|timed out", env={"CHECKSYNC_FAULT":
                                                                     "restore-fds:3:hang"},
                   within=CALL_TIMEOUT_S + MARGIN_S)

    # Crafted: the file behind fd data_fd is gone, then is a FIFO.
    os.unlink(datafile)
    expect_failure(r, "the file behind a descriptor deleted", image, binary, "files",
                   rf"fd {data_fd}: {re.escape(datafile)} is missing")
    os.mkfifo(datafile)
    expect_failure(r, "the file behind a descriptor replaced by a FIFO", image, binary, "files",
                   rf"fd {data_fd}: {re.escape(datafile)} is now a FIFO", within=MARGIN_S)
    os.unlink(datafile)
    with open(datafile, "wb") as f:
        f.write(b"data")

    # Crafted: the executable is a FIFO; hashing it would block forever.
    saved = binary + ".saved"
    os.rename(binary, saved)
    os.mkfifo(binary)
    expect_failure(r, "the executable replaced by a FIFO", image, saved, "files",
                   rf"executable {re.escape(binary)} is a FIFO, not a regular file",
                   within=MARGIN_S)
    os.unlink(binary)
    os.rename(saved, binary)

    # Crafted: an rlimit above what the restorer may grant.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256

    def lower_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, low))

    expect_failure(r, f"a hard RLIMIT_NOFILE of {low} for the restorer", image, binary, "rlimits",
                   r"cannot set RLIMIT_NOFILE of pid \d+", preexec=lower_nofile)

    # After all that, the image still restores.
    restored = cs.restore(image, what="restore after the faults")
    cs.wait_serving(client, restored)
    problems = cs.kv_check(client, keys, each=False)
    r.check("the image still restores after every failed attempt", not problems,
            "100 keys", cs.summarize(problems))
    restored.kill9()


if __name__ == "__main__":
    cs.run(main)
