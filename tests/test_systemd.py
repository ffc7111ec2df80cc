#!/usr/bin/env python3
"""The daemons as operators run them: installed with `meson install` into a
booted Debian 12 systemd (systemd-nspawn, one container per host), driven
only through systemctl, journalctl and the daemons' own `status`.

Hosts A (primary) and B (backup) are containers in the network namespaces
of a tests/lib/replication.py topology; C (a plain namespace) is the
client. The same build and the same service file go to both hosts; A's
checksync-primary.service protects kvserver (cgo), B's
checksync-backup.service keeps its image. In order:

  1. `systemctl start` returns only after READY=1 (the status command
     answers at once), STATUS= says what each daemon does;
  2. 200 keys written through A; acknowledged epochs grow;
  3. watchdog: 60 s of replication with no restart of either unit;
  4. backupd: kill -9, then `systemctl restart`, then SIGSTOP (the watchdog
     must kill it): each time the unit comes back by itself with a new
     MainPID, holds at least the epoch acknowledged before, and
     replication resumes;
  5. a broken service file: `systemctl restart` fails, and the error line
     naming file:line is in `systemctl status` and in the journal; fixed,
     the unit starts again;
  6. `systemctl enable` + reboot of B: the unit comes up by itself after
     the boot, with the image it had;
  7. host A dies (SIGKILL of its init): B takes over and serves every key
     from step 2, from its own unit checksync-kvserver.scope;
     `systemctl stop checksync-backup` then stops the daemon cleanly
     (inactive, not failed) and leaves the restored service running, and
     a start finds no left-over process of its own.

Then the primary's side, each on a fresh pair of containers with 200 keys
written and replicated first (the failover-promises issue): kill -9 of
primaryd (systemd brings it back at once: the backup must take the dead
run's image over at once instead of accepting an empty service over it),
`systemctl restart` and `systemctl stop` of checksync-primary (a planned
handover: B serves at once, the unavailability is in A's journal), and a
reboot of A with the unit enabled. In each, every key is served by B at
the end, B says serving, and A runs no second copy of the service.

Usage: test_systemd.py   (meson test --suite systemd; root, debootstrap, systemd-nspawn)
       SD_ONLY="systemctl stop,reboot" test_systemd.py   only those primary events, for development
The root file system is made once with debootstrap and cached under
$CHECKSYNC_TEST_TMP/nspawn (about 3 minutes the first time).
"""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import nspawn  # noqa: E402
import replication as rp  # noqa: E402

BUILD = os.environ.get("CHECKSYNC_BUILD") or os.path.dirname(os.path.dirname(cs.primaryd()))
PRIMARY, BACKUP = "checksync-primary.service", "checksync-backup.service"
KEYS = 200
KV = "/usr/local/bin/kvserver"


def daemon_conf(role, listen=None):
    lines = ["[daemon]"]
    if listen:
        lines.append(f"listen = {listen}")
    lines += ["[tls]", "ca = /etc/checksync/tls/ca.crt", f"cert = /etc/checksync/tls/{role}.crt",
              f"key = /etc/checksync/tls/{role}.key", ""]
    return "\n".join(lines)


def service_conf(topo, certs):
    """The one service file both hosts get: the harness's keys (names, timing) with
    the paths of an installed system."""
    dep = rp.Deployment(topo, certs, KV, hook=False)
    text = dep.service_text(command=f"{KV} -addr 0.0.0.0:{rp.PORT}", executable=KV)
    return text


def install_host(name, topo, certs, kvserver, role):
    root = nspawn.make_root(name, BUILD)
    nspawn.put(root, KV, src=kvserver, mode=0o755)
    nspawn.put(root, "/etc/checksync/tls/ca.crt", src=certs.ca)
    cert, key = certs.primary if role == "primary" else certs.backup
    nspawn.put(root, f"/etc/checksync/tls/{role}.crt", src=cert)
    nspawn.put(root, f"/etc/checksync/tls/{role}.key", src=key, mode=0o600)
    listen = f"{topo.addr[topo.b]}:{rp.BACKUP_PORT}" if role == "backup" else None
    nspawn.put(root, f"/etc/checksync/{role}.conf", daemon_conf(role, listen))
    nspawn.put(root, "/etc/checksync/services/kvserver.conf", service_conf(topo, certs))
    return nspawn.Container(name, root, topo.a if role == "primary" else topo.b)


def status(ct, role):
    """The service's fields from `checksync-ROLEd status`, run in the container."""
    r = ct.probe(f"/usr/local/bin/checksync-{role}d", "status", timeout=30)
    if r.rc != 0:
        raise cs.TestError(f"{ct.name}: {r}")
    fields = rp.parse_status(r.stdout)
    fields["raw"] = r.stdout
    return fields


def acked(a):
    return status(a, "primary").get("acked") or 0


def held(b):
    return status(b, "backup").get("epoch") or 0


def wait_replicating(a, b, above, timeout=30):
    """Waits until A reports an epoch above ABOVE acknowledged and B holds it."""
    def ok():
        pa, be = acked(a), held(b)
        return (pa, be) if pa > above and be >= pa - 1 and be > above else None
    try:
        return rp.wait_for(f"an epoch above {above} acknowledged by A and held by B", ok, timeout, 0.3)
    except cs.TestError as e:
        raise cs.TestError(f"{e}\nA's journal:\n{a.journal(PRIMARY, 30)}\nB's journal:\n{b.journal(BACKUP, 30)}")


def unit(ct, name):
    return ct.show(name, "ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Result")


def check_comes_back(r, tag, a, b, before, how):
    """After HOW was done to B's daemon: the unit restarted by itself (new MainPID,
    NRestarts + 1), kept its image, and replication resumes."""
    def back():
        u = unit(b, BACKUP)
        return u if (u["ActiveState"] == "active" and u["MainPID"] not in ("0", before["MainPID"])) else None
    u = rp.wait_for(f"{BACKUP} active again with a new MainPID after {how}", back, 30, 0.2)
    r.check(f"{tag}: systemd restarted {BACKUP} by itself after {how} (NRestarts "
            f"{before['NRestarts']} -> {u['NRestarts']})",
            int(u["NRestarts"]) == int(before["NRestarts"]) + 1 or how == "systemctl restart",
            int(before["NRestarts"]) + 1, u["NRestarts"])
    return u


def scenario(r):
    kvserver = cs.build_workload("kvserver", "cgo")
    nspawn.base_root()  # the slow part, once; before any timing starts
    if not os.environ.get("SD_ONLY"):
        with_pair(kvserver, lambda topo, a, b: lifecycle(r, topo, a, b))
    for event in (os.environ.get("SD_ONLY") or "kill -9,systemctl restart,systemctl stop,reboot").split(","):
        with_pair(kvserver, lambda topo, a, b: primary_event(r, topo, a, b, event))


def with_pair(kvserver, fn):
    """FN(topo, a, b) with containers A (primary) and B (backup) in a fresh topology."""
    with rp.Topology() as topo:
        certs = rp.make_certs(topo.addr[topo.b])
        a = install_host(f"cs-sd-a-{topo.a[-6:]}", topo, certs, kvserver, "primary")
        b = install_host(f"cs-sd-b-{topo.b[-6:]}", topo, certs, kvserver, "backup")
        try:
            fn(topo, a, b)
        finally:
            for ct in (a, b):
                ct.kill()


def start_pair(r, a, b, tag=""):
    """Boots both, starts the daemons (B's first), waits for an acknowledged epoch."""
    b.boot()
    a.boot()
    for ct, name in ((b, BACKUP), (a, PRIMARY)):
        res = ct.systemctl("start", name)
        if res.rc != 0:
            raise cs.TestError(f"{tag}`systemctl start {name}` failed: {res}\n{ct.journal(name, 30)}")
    wait_replicating(a, b, 0)


def services_in(ct):
    """Pids of kvserver processes running in container CT (by its pid namespace)."""
    try:
        ns = os.readlink(f"/proc/{ct.leader}/ns/pid")
    except OSError:
        return []
    out = []
    for pid in cs.processes_running(KV) + cs.processes_running(ct.path(KV)):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == ns:
                out.append(pid)
        except OSError:
            pass
    return out


def primary_event(r, topo, a, b, event):
    """EVENT done to A's primaryd (or A itself) after KEYS keys are replicated: B serves
    them all at the end, and A never serves a second, empty copy."""
    tag = f"primaryd {event}: "
    start_pair(r, a, b, tag)
    written = cs.kv_write(cs.Client(topo.addr[topo.a], rp.PORT, netns=topo.c), "p", KEYS,
                          os.getpid(), retries=3)
    wait_replicating(a, b, acked(a) + 2)
    client_b = cs.Client(topo.addr[topo.b], rp.PORT, netns=topo.c)
    client_a = cs.Client(topo.addr[topo.a], rp.PORT, netns=topo.c)
    t0 = time.monotonic()
    if event == "kill -9":
        a.systemctl("kill", "-s", "KILL", "--kill-whom=main", PRIMARY)
    elif event == "reboot":
        res = a.systemctl("enable", PRIMARY)
        r.check(f"{tag}`systemctl enable {PRIMARY}`", res.rc == 0, "exit 0", str(res))
        a.reboot()
    else:
        res = a.systemctl(event.split()[1], PRIMARY)
        r.check(f"{tag}`{event} {PRIMARY}` succeeds", res.rc == 0, "exit 0", str(res))

    def b_serves():
        st = status(b, "backup")
        return st if st.get("role") == "serving" else None
    try:
        st = rp.wait_for("B serving", b_serves, 30, 0.2)
    except cs.TestError as e:
        r.fail(f"{tag}B took the service over: {e}\nA's journal:\n{a.journal(PRIMARY, 40)}\n"
               f"B's journal:\n{b.journal(BACKUP, 40)}")
        return
    took = time.monotonic() - t0
    items = rp.wait_for("kvserver answering on B", lambda: _items(client_b), 30, 0.1)
    missing = [k for k, v in written.items() if items.get(k) != v]
    r.check(f"{tag}B serves all {KEYS} keys ({took * 1000:.0f} ms after the event)", not missing,
            "none missing", cs.summarize(missing))
    if event != "reboot":
        r.check(f"{tag}B took over at once, without waiting out a failover timeout "
                f"({took * 1000:.0f} ms; failover_timeout_ms {rp.TIMING['failover_timeout_ms']})",
                took * 1000 < rp.TIMING["failover_timeout_ms"] + 2000, "well under failover + 2 s", took)
    time.sleep(1.0)  # time enough for a restarted primaryd to start a fresh copy, if it would
    copies = services_in(a)
    stale = _items(client_a)
    r.check(f"{tag}A runs no second copy of the service (kvserver in A: {copies}; A's address "
            f"answers: {stale is not None})", not copies and stale is None, "none", copies)
    if event in ("systemctl stop", "systemctl restart"):
        jr = a.journal(PRIMARY, 80)
        m = re.search(r"unavailable for (\d+) ms", jr)
        r.check(f"{tag}A's journal tells the handover's unavailability ({m.group(0) if m else 'none'})",
                m is not None, "a line 'unavailable for N ms'", jr[-1500:])
    u = unit(a, PRIMARY)
    cs.log(f"{tag}A's unit afterwards: {u['ActiveState']}/{u['SubState']}, STATUS={u['StatusText']!r}")


def _items(client):
    try:
        return client.json("/items", timeout=2)
    except cs.TestError:
        return None


SCOPE = "checksync-kvserver.scope"


def journal_json(ct, *args):
    """Entries of `journalctl ARGS -o json` in container CT, as dicts."""
    res = ct.run("journalctl", "--no-pager", "-o", "json", *args)
    out = []
    for line in res.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def restored_output_in_journal(r, b, client_b, pid, when):
    """On B serving: `systemctl status` shows the restored service as SCOPE, and what it
    writes now to stdout and stderr (kvserver's /say) is in `journalctl -u SCOPE`, with the
    service's name as identifier and its own pid, and not in the backup daemon's journal."""
    tag = f"restored service ({when}): "
    st = b.systemctl("status", "--no-pager", "-n", "0", SCOPE)
    r.check(f"{tag}`systemctl status {SCOPE}` shows it active, holding pid {pid}",
            st.rc == 0 and "active (running)" in st.stdout and re.search(rf"\b{pid}\b", st.stdout),
            f"active (running), pid {pid}", str(st))
    word = f"hello-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    said = client_b.get("/say", {"m": word}, timeout=5)
    r.check(f"{tag}the service writes to its stdout and stderr (/say)", said[0] == 200, 200, said)
    lines = {f"kvserver: say {word}": "stdout", f"kvserver: say {word} (stderr)": "stderr"}

    def found():
        got = {e.get("MESSAGE"): e for e in journal_json(b, "-u", SCOPE, "-n", "200")
               if e.get("MESSAGE") in lines}
        return got if len(got) == len(lines) else None
    try:
        got = rp.wait_for(f"both lines in `journalctl -u {SCOPE}`", found, 10, 0.2)
    except cs.TestError as e:
        r.fail(f"{tag}its output is in `journalctl -u {SCOPE}`: {e}\nB's scope journal:\n"
               f"{b.journal(SCOPE, 20)}\nB's daemon journal:\n{b.journal(BACKUP, 30)}")
        return
    for msg, e in got.items():
        r.check(f"{tag}its {lines[msg]} line is in `journalctl -u {SCOPE}` as "
                f"{e.get('SYSLOG_IDENTIFIER')!r}, pid {e.get('_PID')}, unit {e.get('_SYSTEMD_UNIT')}",
                e.get("_SYSTEMD_UNIT") == SCOPE and e.get("SYSLOG_IDENTIFIER") == "kvserver"
                and e.get("_PID") == str(pid) and e.get("_TRANSPORT") == "stdout",
                f"unit {SCOPE}, identifier kvserver, pid {pid}, transport stdout",
                {k: e.get(k) for k in ("_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER", "_PID", "_TRANSPORT")})
    stray = [e for e in journal_json(b, "-u", BACKUP, "-n", "300") if word in e.get("MESSAGE", "")]
    r.check(f"{tag}none of it is filed under {BACKUP}", not stray, "none", stray)


def restored_service_stops_with_its_scope(r, b, client_b, pid):
    """After the daemon's stop and start: a `systemctl restart` of it leaves no
    "left-over process" line either, the service's output still reaches its journal (the
    stream is the service's own), and `systemctl stop SCOPE` stops the service; the backup
    daemon says that it ended."""
    res = b.systemctl("restart", BACKUP)
    jr = b.journal(BACKUP, 30)
    r.check(f"`systemctl restart {BACKUP}` with the service running in {SCOPE}: no 'Found left-over "
            f"process' line", res.rc == 0 and "left-over process" not in jr, "none", jr[-1500:])
    restored_output_in_journal(r, b, client_b, pid, "after the backup daemon's restarts")
    res = b.systemctl("stop", SCOPE)
    r.check(f"`systemctl stop {SCOPE}` succeeds", res.rc == 0, "exit 0", str(res))
    state = b.show(SCOPE, "ActiveState").get("ActiveState")
    left, answers = services_in(b), _items(client_b) is not None
    r.check(f"`systemctl stop {SCOPE}` stops the service (scope {state}; kvserver in B: {left}; "
            f"B's address answers: {answers})", state != "active" and not left and not answers,
            "inactive, no kvserver, no answer", (state, left, answers))

    def says():
        text = unit(b, BACKUP)["StatusText"]
        return text if "(ended)" in text else None
    try:
        text = rp.wait_for(f"{BACKUP}'s STATUS= saying the service ended", says, 10, 0.2)
    except cs.TestError as e:
        r.fail(f"backupd after `systemctl stop {SCOPE}`: {e}\n{b.journal(BACKUP, 20)}")
        return
    jr = b.journal(BACKUP, 20)
    m = re.search(rf"the restored service \(pid {pid}\) has [^\n]*", jr)
    r.check(f"the backup daemon tells that the service ended: {m.group(0) if m else None!r}; "
            f"STATUS={text!r}", m is not None, "a line 'the restored service (pid N) has ...'",
            jr[-1500:])


def lifecycle(r, topo, a, b):
    # 1. start returns after READY; STATUS=
    b.boot()
    a.boot()
    for ct, name, role in ((b, BACKUP, "backup"), (a, PRIMARY, "primary")):
        t0 = time.monotonic()
        res = ct.systemctl("start", name)
        took = time.monotonic() - t0
        r.check(f"`systemctl start {name}` succeeds ({took:.1f} s)", res.rc == 0, "exit 0", str(res))
        st = ct.probe(f"/usr/local/bin/checksync-{role}d", "status")
        r.check(f"{name}: `status` answers as soon as start returned (READY=1 came after the socket)",
                st.rc == 0, "exit 0", str(st))
        u = unit(ct, name)
        r.check(f"{name}: active (running), STATUS= names the service: {u['StatusText']!r}",
                u["ActiveState"] == "active" and u["SubState"] == "running" and "kvserver" in u["StatusText"],
                "active/running, StatusText with kvserver", u)
    wait_replicating(a, b, 0)
    u = unit(a, PRIMARY)
    r.check(f"{PRIMARY}: STATUS= tells of the backup once epochs are acknowledged: {u['StatusText']!r}",
            re.search(r"epoch \d+", u["StatusText"]) is not None, "an epoch figure", u["StatusText"])

    # 2. keys through A
    client_a = cs.Client(topo.addr[topo.a], rp.PORT, netns=topo.c)
    client_b = cs.Client(topo.addr[topo.b], rp.PORT, netns=topo.c)
    written = cs.kv_write(client_a, "sd", KEYS, os.getpid(), retries=3)
    t_written = time.monotonic()
    pa0, _ = wait_replicating(a, b, acked(a) + 2)
    cs.log(f"{KEYS} keys written through A; epoch {pa0} acknowledged")

    # 3. watchdog: a minute without restarts
    before = {ct.name: unit(ct, n) for ct, n in ((a, PRIMARY), (b, BACKUP))}
    time.sleep(max(0.0, 60 - (time.monotonic() - t_written)))
    for ct, n in ((a, PRIMARY), (b, BACKUP)):
        u = unit(ct, n)
        r.check(f"{n}: no restart in 60 s of replication under the watchdog (NRestarts {u['NRestarts']}, "
                f"MainPID {u['MainPID']})",
                u["NRestarts"] == before[ct.name]["NRestarts"] and u["MainPID"] == before[ct.name]["MainPID"]
                and u["ActiveState"] == "active", before[ct.name], u)
    pa1, _ = wait_replicating(a, b, pa0)
    r.check("epochs went on being acknowledged during that minute", pa1 > pa0 + 300, f"> {pa0 + 300}", pa1)

    # 4. backupd: kill -9, restart, SIGSTOP (watchdog)
    for how in ("kill -9", "systemctl restart", "SIGSTOP"):
        u0 = unit(b, BACKUP)
        epoch0 = acked(a)
        if how == "kill -9":
            b.systemctl("kill", "-s", "KILL", BACKUP)
        elif how == "systemctl restart":
            res = b.systemctl("restart", BACKUP)
            r.check(f"`systemctl restart {BACKUP}` succeeds", res.rc == 0, "exit 0", str(res))
        else:
            b.systemctl("kill", "-s", "STOP", BACKUP)
        t0 = time.monotonic()
        check_comes_back(r, f"backupd {how}", a, b, u0, how)
        took = time.monotonic() - t0
        if how == "SIGSTOP":
            jr = b.journal(BACKUP, 80)
            r.check(f"SIGSTOP: the watchdog killed the stopped daemon ({took:.1f} s; WatchdogSec=5s)",
                    "watchdog" in jr.lower() and took < 20, "a watchdog line in the journal, < 20 s",
                    f"{took:.1f} s; journal:\n{jr[-1500:]}")
        e = held(b)
        r.check(f"backupd {how}: the image survives (holds epoch {e} >= {epoch0} acknowledged before)",
                e >= epoch0, f">= {epoch0}", e)
        wait_replicating(a, b, epoch0, timeout=40)
    problems = cs.kv_check(client_a, written, each=False)
    r.check(f"all {KEYS} keys still served by A after the backup's restarts", not problems, "all",
            cs.summarize(problems))

    # 5. a broken service file
    svc = b.path("/etc/checksync/services/kvserver.conf")
    with open(svc) as f:
        good = f.read()
    bad_line = len(good.splitlines()) + 1
    with open(svc, "a") as f:
        f.write("failover_timeout_msec = 1000\n")
    res = b.systemctl("restart", BACKUP)
    r.check("a broken service file: `systemctl restart` fails", res.rc != 0, "non-zero", str(res))
    u = rp.wait_for(f"{BACKUP} failed with the broken file",
                    lambda: (lambda u: u if u["ActiveState"] == "failed" else None)(unit(b, BACKUP)), 30, 0.2)
    main = b.show(BACKUP, "ExecMainStatus")["ExecMainStatus"]
    r.check(f"the daemon exits 78 (EX_CONFIG) and the unit fails without a restart loop "
            f"(RestartPreventExitStatus=78; NRestarts {u['NRestarts']})",
            main == "78" and u["NRestarts"] == "0", "status 78, NRestarts 0", f"status {main}, {u}")
    want = f"kvserver.conf:{bad_line}:"
    st = b.systemctl("status", "--no-pager", "-n", "20", BACKUP).stdout
    r.check(f"`systemctl status` shows the error line naming {want}", want in st, want, st[-1500:])
    jr = b.journal(BACKUP, 50)
    r.check(f"the journal has the error line naming {want}", want in jr, want, jr[-1500:])
    with open(svc, "w") as f:
        f.write(good)
    b.systemctl("reset-failed", BACKUP)
    res = b.systemctl("start", BACKUP)
    r.check("fixed, the unit starts again", res.rc == 0, "exit 0", str(res))
    wait_replicating(a, b, acked(a), timeout=40)

    # 6. enable + reboot of B
    res = b.systemctl("enable", BACKUP)
    r.check(f"`systemctl enable {BACKUP}`", res.rc == 0, "exit 0", str(res))
    epoch0 = acked(a)
    b.reboot()
    u = rp.wait_for(f"{BACKUP} active after the reboot",
                    lambda: (lambda u: u if u["ActiveState"] == "active" else None)(unit(b, BACKUP)), 30, 0.3)
    r.check(f"after a reboot of B, {BACKUP} runs without being started (enabled)", u["ActiveState"] == "active",
            "active", u)
    e = held(b)
    r.check(f"after the reboot B holds epoch {e} >= {epoch0} acknowledged before it", e >= epoch0,
            f">= {epoch0}", e)
    pa, _ = wait_replicating(a, b, epoch0, timeout=40)

    # 7. host A dies
    t_kill = time.monotonic()
    a.kill()
    def served():
        try:
            items = client_b.json("/items", timeout=2)
        except cs.TestError:
            return None
        return items
    try:
        items = rp.wait_for("kvserver answering on B after A died", served, 30, 0.1)
    except cs.TestError as e:
        raise cs.TestError(f"{e}\nB's journal:\n{b.journal(BACKUP, 40)}")
    took = time.monotonic() - t_kill
    missing = [k for k, v in written.items() if items.get(k) != v]
    r.check(f"B took over {took * 1000:.0f} ms after A died and serves all {KEYS} keys",
            not missing, "none missing", cs.summarize(missing))
    st = status(b, "backup")
    r.check("B's status says serving", st.get("role") == "serving", "serving", st["raw"])
    scope = "checksync-kvserver.scope"
    sc = b.show(scope, "ActiveState", "MainPID", "ControlGroup")
    procs = b.run("cat", f"/sys/fs/cgroup/systemd{sc.get('ControlGroup', '')}/cgroup.procs").stdout.split()
    r.check(f"the restored service runs in its own unit, {scope} (active, holding pid {st.get('pid')})",
            sc.get("ActiveState") == "active" and str(st.get("pid")) in procs, "active, with the pid",
            f"{sc}, procs {procs}")
    restored_output_in_journal(r, b, client_b, st.get("pid"), "after the takeover")
    res = b.systemctl("stop", BACKUP)
    u = unit(b, BACKUP)
    r.check(f"`systemctl stop {BACKUP}` stops it cleanly (inactive, result success)",
            res.rc == 0 and u["ActiveState"] == "inactive" and u["Result"] == "success",
            "inactive/success", u)
    problems = cs.kv_check(client_b, written, each=False)
    r.check("the restored service runs on after its daemon stopped", not problems,
            "all keys", cs.summarize(problems))
    res = b.systemctl("start", BACKUP)
    jr = b.journal(BACKUP, 30)
    r.check("the daemon starts again and finds no left-over process of its own (the service is in "
            "its scope)", res.rc == 0 and "left-over process" not in jr, "no 'left-over process' line",
            jr[-1500:])
    restored_service_stops_with_its_scope(r, b, client_b, st.get("pid"))


if __name__ == "__main__":
    cs.run(scenario)
