#!/usr/bin/env python3
"""Never silently unprotected: when epochs cannot be captured or shipped, primaryd says so.

Hosts as namespaces (tests/lib/replication.py), backupd in B, primaryd in A
guarding kvserver with dirty_tracking = uffd, metrics served in A.

denied      primaryd runs under a real seccomp filter (libseccomp, loaded in
            the child before exec) that fails pidfd_getfd with EPERM, as
            systemd-nspawn's default filter does: it cannot take the
            service's userfaultfd, so no epoch can be captured. Within one
            second of its status socket answering, all three places must say
            so: `status` (protected 0, a reason naming the userfaultfd),
            STATUS= on the notify socket ("UNPROTECTED: kvserver: ..."), and
            the metrics (checksync_protected 0). It never says it is protected,
            and after 3 s the log holds one UNPROTECTED line, not one per epoch.
control     the same without the filter: protected 1 once epoch 1 is
            acknowledged, STATUS= without UNPROTECTED, and the log tells the
            normal life at info level (started as pid N, backup accepted us,
            first epoch acknowledged). Then backupd is killed: within 1.5 s
            (lease 500 ms) status, STATUS= and metrics say UNPROTECTED.
"""

import ctypes
import errno
import os
import re
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

METRICS_PORT = 9464
SCMP_ACT_ALLOW = 0x7fff0000


def deny_pidfd_getfd():
    """In the child before exec: a seccomp filter failing pidfd_getfd with EPERM (libseccomp)."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    nr = lib.seccomp_syscall_resolve_name(b"pidfd_getfd")
    act_errno = 0x00050000 | errno.EPERM  # SCMP_ACT_ERRNO(EPERM)
    if not ctx or nr < 0 or lib.seccomp_rule_add(ctx, act_errno, nr, 0) != 0 or lib.seccomp_load(ctx) != 0:
        os._exit(99)


def start_primaryd(dep, topo, seccomp):
    """Like Deployment.start_primaryd, with the seccomp filter applied before exec if SECCOMP."""
    rundir = dep.path("a")
    log = os.path.join(rundir, "primaryd.log")
    sock = os.path.join(topo.sockdir, f"primaryd-{os.getpid()}-{int(seccomp)}.notify")
    notify = rp.Notify(sock)
    env = dict(os.environ, NOTIFY_SOCKET=sock)
    with open(log, "ab") as logf:
        popen = subprocess.Popen(cs.netns_prefix(topo.a) + [cs.primaryd(), "--config", dep.primary_conf],
                                 env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                 preexec_fn=deny_pidfd_getfd if seccomp else None)
    proc = cs.Proc(popen.pid, "primaryd started by the test", popen, log)
    return rp.Daemon("primaryd", cs.primaryd(), dep.primary_conf, topo.a, log, notify, proc,
                     dep.status_socket["a"])


def metrics(topo):
    with cs.in_netns(topo.a):
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as resp:
            return resp.read().decode()


def protected_metric(text):
    m = re.search(r'^checksync_protected\{service="kvserver"[^}]*\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def last_status(daemon):
    s = daemon.notify.saw("STATUS=")
    return s[-1] if s else None


def reason_text(daemon):
    rows = rp.status_socket_rows(daemon.socket)
    return next((v for svc, _, name, unit, v in rows if svc == rp.SERVICE and name == "unprotected"), None)


def fields(daemon):
    rows = rp.status_socket_rows(daemon.socket)
    return {name: v for svc, _, name, unit, v in rows if svc == rp.SERVICE}


def says_unprotected(daemon, topo, reason_re):
    """(status, STATUS=, metric) all say UNPROTECTED with a reason matching REASON_RE, or None."""
    f = fields(daemon)
    st = last_status(daemon)
    m = protected_metric(metrics(topo))
    ok = (f.get("protected") == 0 and re.search(reason_re, str(f.get("unprotected")))
          and st and st.startswith("STATUS=UNPROTECTED: kvserver: ") and re.search(reason_re, st)
          and m == 0)
    return (f, st, m) if ok else None


def deployment(topo, certs, binary):
    dep = rp.Deployment(topo, certs, binary)
    dep.write_primary_conf(extra=f"metrics_listen = 127.0.0.1:{METRICS_PORT}")
    return dep


def denied(r, binary):
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        dep = deployment(topo, certs, binary)
        backup = dep.start_backupd()
        primary = start_primaryd(dep, topo, seccomp=True)
        rp.wait_status(primary)
        t0 = time.monotonic()
        reason = r"userfaultfd.*Operation not permitted"
        try:
            f, st, m = rp.wait_for("status, STATUS= and metrics saying UNPROTECTED (userfaultfd)",
                                   lambda: says_unprotected(primary, topo, reason), 1.0, 0.05)
            r.check(f"denied pidfd_getfd: UNPROTECTED in status, STATUS= and metrics within 1 s "
                    f"({1000 * (time.monotonic() - t0):.0f} ms)", True)
            cs.log(f"status reason: {f.get('unprotected')!r}; {st!r}; checksync_protected {m}")
        except cs.TestError as e:
            r.fail(f"denied pidfd_getfd: {e}; status:\n{primary.status_raw().stdout}\nlog:\n"
                   f"{primary.log_tail(1500)}")
        text = primary.status_raw().stdout
        r.check("the status command prints the reason", re.search(r"unprotected\s+.*userfaultfd", text),
                "a line 'unprotected ... userfaultfd ...'", text)
        time.sleep(3)
        said = primary.notify.saw("STATUS=")
        wrong = [s for s in said if "UNPROTECTED" not in s]
        r.check("denied: no STATUS= ever says the service is protected or connected", said and not wrong,
                "every STATUS= UNPROTECTED", wrong[:3] or said[:1])
        r.check("denied: status still says protected 0 after 3 s", fields(primary).get("protected") == 0,
                0, fields(primary).get("protected"))
        log = primary.log_text()
        n_unprot = log.count("kvserver: UNPROTECTED:")
        n_uffd = len(re.findall(r"userfaultfd", log))
        r.check("denied: the log says UNPROTECTED once per change, not per epoch (30 epochs in 3 s)",
                n_unprot <= 3 and n_uffd == 1,
                "the capture failure once, at most 3 changes (not connected, no ack yet, capture failing)",
                f"{n_unprot} UNPROTECTED lines, {n_uffd} naming the userfaultfd:\n{log[-1500:]}")
        primary.proc.kill9()
        backup.proc.kill9()


def control(r, binary):
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        dep = deployment(topo, certs, binary)
        backup = dep.start_backupd()
        primary = start_primaryd(dep, topo, seccomp=False)
        rp.wait_status(primary)
        rp.wait_acked(primary, backup, at_least=1)

        def protected():
            f, st, m = fields(primary), last_status(primary), protected_metric(metrics(topo))
            return (f, st, m) if (f.get("protected") == 1 and st and "UNPROTECTED" not in st and m == 1) else None
        f, st, m = rp.wait_for("status, STATUS= and metrics saying protected", protected, 5)
        r.check("control: protected 1 in status, STATUS= and metrics once epoch 1 is acknowledged", True)
        cs.log(f"control: {st!r}")
        log = primary.log_text()
        for what, pat in (("the service started as pid N", r"kvserver: started .* as pid \d+"),
                          ("the backup accepted us", r"kvserver: backup \S+ accepted us"),
                          ("the first epoch acknowledged", r"kvserver: first epoch acknowledged")):
            r.check(f"control: the log says {what} (info level, no -v)", re.search(pat, log), pat, log[-800:])

        backup.proc.kill9()
        t0 = time.monotonic()
        try:
            f, st, m = rp.wait_for("UNPROTECTED after backupd died", lambda: says_unprotected(
                primary, topo, r"not connected|not heard|no epoch acknowledged"), 1.5, 0.05)
            r.check(f"control: backupd killed: UNPROTECTED in status, STATUS= and metrics within 1.5 s "
                    f"({1000 * (time.monotonic() - t0):.0f} ms)", True)
            cs.log(f"after backupd died: {st!r}")
        except cs.TestError as e:
            r.fail(f"control: {e}; log:\n{primary.log_tail(1500)}")
        primary.proc.kill9()


def main(r):
    binary = cs.build_workload("kvserver", "cgo")
    denied(r, binary)
    control(r, binary)


if __name__ == "__main__":
    cs.run(main)
