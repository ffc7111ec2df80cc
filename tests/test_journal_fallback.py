#!/usr/bin/env python3
"""A restored service's lost output on a host without journald (network
namespaces; PID 1 of this machine is not systemd).

On host A primaryd, and so the service it starts, writes its standard output
and error into a pipe the test reads, as a service's output goes to a journal
stream or a terminal on a real host: its reader goes with A. The test checks
that the service's /say output does arrive there, kills primaryd and the
service (A dies), and after B's takeover checks:
  - B's log says once that the journal cannot be opened, and that fds 1
    and 2 go to /dev/null (today's behaviour where no journald runs; with one,
    tests/test_systemd.py checks the journal);
  - the restored service still writes to its stdout and stderr (/say answers
    200 from the restored pid: the writes went to /dev/null, no EPIPE or EBADF
    and no SIGPIPE killed it) and serves the keys written before.

Usage: test_journal_fallback.py   (meson test journal-fallback; root, netns)
"""

import os
import secrets
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

NO_JOURNAL = "the journal (sd_journal_stream_fd) cannot be opened for the restored service"


class PipeReader:
    """The reading end of primaryd's stdout/stderr, copied to LOG line by line."""

    def __init__(self, rfd, log):
        self.lines, self.log = [], log
        self.thread = threading.Thread(target=self._run, args=(rfd,), daemon=True)
        self.thread.start()

    def _run(self, rfd):
        with os.fdopen(rfd, "r", errors="replace") as f, open(self.log, "a") as out:
            for line in f:
                self.lines.append(line.rstrip("\n"))
                out.write(line)
                out.flush()


def start_primaryd_on_pipe(dep):
    """primaryd in A with NOTIFY_SOCKET, its stdout and stderr one pipe the test reads."""
    rfd, wfd = os.pipe()
    log = dep.path("a", "primaryd.log")
    sock = os.path.join(dep.topo.sockdir, f"primaryd-{secrets.token_hex(3)}.notify")
    notify = rp.Notify(sock)
    popen = subprocess.Popen(cs.netns_prefix(dep.topo.a) + [cs.primaryd(), "--config", dep.primary_conf],
                             env=dict(os.environ, NOTIFY_SOCKET=sock), stdin=subprocess.DEVNULL,
                             stdout=wfd, stderr=wfd)
    os.close(wfd)
    reader = PipeReader(rfd, log)
    proc = cs.Proc(popen.pid, "primaryd started by the test (output to a pipe)", popen, log)
    daemon = rp.Daemon("primaryd", cs.primaryd(), dep.primary_conf, dep.topo.a, log, notify, proc,
                       socket_path=dep.status_socket["a"])
    rp.wait_status(daemon)
    return daemon, reader


def scenario(r):
    binary = cs.build_workload("kvserver", "cgo")
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        dep = rp.Deployment(topo, certs, binary)
        backup = dep.start_backupd()
        primary, reader = start_primaryd_on_pipe(dep)
        service = rp.service_proc(primary, binary)
        vip = dep.vip_client()
        cs.wait_serving(vip, service)
        written = cs.kv_write(vip, "jf", 50, os.getpid(), retries=3)
        word = f"before-{os.getpid()}"
        said = vip.get("/say", {"m": word})
        seen = rp.wait_for("the service's /say line in the pipe", lambda: [
            l for l in reader.lines if f"kvserver: say {word}" in l] or None, 10, 0.1)
        r.check(f"on A the service's stdout and stderr are the pipe ({seen[0]!r})", said[0] == 200 and seen,
                "the line in the pipe", said)
        rp.wait_acked(primary, backup, at_least=(primary.status().get("acked") or 0) + 2)
        rp.kill_now(primary.proc, service)
        reader.thread.join(10)  # every writer is gone: the pipe's reader ends with A
        st = rp.wait_for("B serving", lambda: (lambda s: s if s.get("role") == "serving" else None)(
            backup.status()), 30, 0.2)
        pid = st.get("pid")
        said = rp.wait_for("/say answered on B", lambda: _say(vip, "after"), 30, 0.2)
        r.check(f"the restored service (pid {pid}) writes to its stdout and stderr: /say answers "
                f"{said[0]} {said[1]}", said[0] == 200 and said[1].get("pid") == pid, f"200 from pid {pid}",
                said)
        log = backup.log_text()
        n = log.count(NO_JOURNAL)
        r.check(f"B's log says once that there is no journal ({n} lines '{NO_JOURNAL}')", n == 1, 1,
                log[-2000:])
        for fd in (1, 2):
            line = f"fd {fd}: its reader is gone, redirecting it to /dev/null"
            r.check(f"B's log: {line!r}", line in log, line, log[-2000:])
        problems = cs.kv_check(vip, written, each=False)
        r.check(f"the restored service serves the {len(written)} keys written on A", not problems, "all",
                cs.summarize(problems))


def _say(client, word):
    try:
        return client.get("/say", {"m": word}, timeout=2)
    except cs.TestError:
        return None


if __name__ == "__main__":
    cs.run(scenario)
