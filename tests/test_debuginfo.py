#!/usr/bin/env python3
"""A stripped executable whose DWARF is in a separate debug file gets live capture
and a restore that patches m.procid, wherever the debug file is found: by build-id,
by .gnu_debuglink, or by a service's debug_file.

tickers is built once with DWARF, then split the way distributions do (dh_strip):
`objcopy --only-keep-debug` makes the debug file, `objcopy --strip-all` strips the
executable, `objcopy --add-gnu-debuglink` links them. (`go build -ldflags=-s -w`
cannot be paired with a debug file: it writes no DWARF, and the build info it
records differs from the unstripped build's, so its .data is not the same.) The
lookups happen under a test directory given as --debug-root, so nothing is
written to /usr/lib/debug.

For each kind of binary: the dump's mode must be live and name the debug file;
a copy restored beside the still-running original (its thread ids are taken, so
it gets new ones and m.procid must be patched) must hold the original's state and
stop a spinning goroutine for each GC within MAX_PAUSE_MS (the preempt test's
method); the image must be about the unstripped binary's size. A stripped binary
with no debug file, and one whose configured debug file belongs to another
build, are the controls: whole (no DWARF), the refused file named, and the same
preemption check fails (the GC waits for the spin to end), which shows that the
check can tell.

Each kind's mode, image size, pause and preemption result are printed as a table.

Then the daemons, with the debug file given as the service's debug_file: the
primary's status must show live capture and the file, and so must the backup's
while its own file is right. With a backup whose debug_file is another build's,
the backup must say at HELLO, in its log (naming the refused file) and in its
status, that it lacks the DWARF the primary uses, while replication goes on;
host A then dies and B must serve the service with the state it had.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402
import replication as rp  # noqa: E402

SPIN_MS = 4000
MAX_PAUSE_MS = 500


def go_build(out, build_id=None, stripped=False):
    """tickers (cgo), optionally with a GNU build-id note (-B) or -s -w."""
    src = os.path.join(cs.WORKLOADS, "tickers")
    env = dict(os.environ, GO111MODULE="off", GOPATH=cs.GOPATH, GOFLAGS="",
               GOCACHE=os.path.join(cs.TMP, "gocache"))
    env.pop("CGO_ENABLED", None)
    ldflags = []
    if build_id:
        ldflags += ["-B", "0x" + build_id]
    if stripped:
        ldflags += ["-s", "-w"]
    argv = ["go", "build"] + ([f"-ldflags={' '.join(ldflags)}"] if ldflags else []) + ["-o", out, "."]
    r = subprocess.run(argv, cwd=src, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise cs.TestError(f"go build of {src} failed:\n{r.stderr.strip()}")
    return out


def run(argv):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise cs.TestError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def split(exe, debug_file, link=True):
    """Move exe's DWARF into debug_file, strip exe, and (if link) add a .gnu_debuglink."""
    os.makedirs(os.path.dirname(debug_file), exist_ok=True)
    run(["objcopy", "--only-keep-debug", exe, debug_file])
    run(["objcopy", "--strip-all", exe])
    if link:
        run(["objcopy", f"--add-gnu-debuglink={debug_file}", exe])


def has_dwarf(path):
    return ".debug_info" in run(["readelf", "-SW", path])


def make_kinds(top):
    """{kind: (executable, dump/restore extra args, debug file expected or None)}."""
    bid = hashlib.sha1(os.urandom(16)).hexdigest()
    root = os.path.join(top, "debug-root")  # stands in for /usr/lib/debug
    kinds = {}

    exe = go_build(os.path.join(top, "unstripped", "tickers"))
    kinds["unstripped"] = (exe, ["--debug-root", root], exe)

    # build-id: the debug file only under ROOT/.build-id/xx/yyyy.debug, no debuglink.
    exe = go_build(os.path.join(top, "buildid", "tickers"), build_id=bid)
    by_id = os.path.join(root, ".build-id", bid[:2], bid[2:] + ".debug")
    split(exe, by_id, link=False)
    kinds["stripped + build-id debug file"] = (exe, ["--debug-root", root], by_id)

    # debuglink: no GNU build-id (so libdwfl checks the link's CRC), file in .debug/ beside it.
    exe = go_build(os.path.join(top, "debuglink", "tickers"))
    dbg = os.path.join(top, "debuglink", ".debug", "tickers.debug")
    split(exe, dbg)
    kinds["stripped + debuglink"] = (exe, ["--debug-root", root], dbg)

    # debug_file: neither a build-id nor a link; only the configured file says where.
    exe = go_build(os.path.join(top, "debugfile", "tickers"))
    dbg = os.path.join(top, "elsewhere", "tickers.dwarf")
    split(exe, dbg, link=False)
    kinds["stripped + debug_file"] = (exe, ["--debug-root", root, "--debug-file", dbg], dbg)

    kinds["stripped alone"] = (go_build(os.path.join(top, "alone", "tickers"), stripped=True),
                               ["--debug-root", root], None)

    # A debug file of another build (another build-id) configured: refused by name.
    exe = go_build(os.path.join(top, "mismatch", "tickers"), build_id=bid[::-1])
    split(exe, os.path.join(top, "mismatch", "own.debug"), link=False)
    kinds["stripped + wrong debug_file"] = (exe, ["--debug-root", root, "--debug-file", by_id], None)
    return kinds


def gc_pauses(client):
    """Up to 3 GC pauses (ms) while a goroutine spins; stops at the first one too long."""
    client.json("/spin", {"ms": SPIN_MS})
    pauses = []
    for _ in range(3):
        try:
            pauses.append(client.json("/gc", timeout=SPIN_MS / 1000 + 10)["pause_ns"] / 1e6)
        except cs.TestError as e:
            pauses.append(f"no answer ({e})")
        if not isinstance(pauses[-1], float) or pauses[-1] >= MAX_PAUSE_MS:
            break
    return pauses


def try_kind(r, kind, exe, extra, want_debug, table):
    stripped = kind != "unstripped"
    if stripped and has_dwarf(exe):
        raise cs.TestError(f"{exe} still has DWARF after stripping")
    w = cs.start_workload(exe)
    image = os.path.join(cs.run_dir("debuginfo"), "image")
    state = w.client.state()  # the dump's counters are at least these
    dump = cs.run_engine([cs.primaryd(), "dump", "--pid", str(w.pid), "--image", image, *extra])
    r.require(f"{kind}: dump succeeds", dump.rc == 0, "exit 0", f"exit {dump.rc}: {dump.stderr.strip()}")
    report = cs.dump_report(image)
    warnings = [l for l in dump.stderr.splitlines() if "warning" in l]
    if want_debug:
        r.check(f"{kind}: live capture, DWARF from {want_debug}",
                report["mode"] == "live" and report.get("debug_info") == want_debug and not warnings,
                f"mode live, debug_info {want_debug}, no warning",
                f"mode {report['mode']}, debug_info {report.get('debug_info')}, warnings {warnings}")
    else:
        r.check(f"{kind}: whole (no DWARF), said in one warning line",
                report["mode"] == "whole (no DWARF)" and len(warnings) == 1
                and "no DWARF" in warnings[0], "one warning, mode whole (no DWARF)",
                f"mode {report['mode']}, warnings {warnings}")
        if "wrong" in kind:
            r.check(f"{kind}: the warning names the refused file and both build-ids",
                    warnings and re.search(r"debug_file \S+ refused: its build-id is gnu:\w+, "
                                           r"the executable's is gnu:\w+", warnings[0]),
                    "debug_file FILE refused: its build-id is ..., the executable's is ...",
                    warnings)

    with cs.Hosts() as h:
        res = cs.run_engine([cs.backupd(), "restore", "--image", image, "-v", *extra], h.b)
        r.require(f"{kind}: restore beside the original succeeds", res.rc == 0, "exit 0",
                  f"exit {res.rc}: {res.stderr.strip()}")
        copy = cs.Proc(int(res.stdout.split()[0]), f"{kind} copy beside the original")
        client = cs.Client("127.0.0.1", w.client.port, netns=h.b)
        got = cs.wait_serving(client, copy)
        r.check(f"{kind}: the copy has a new pid and the original's state",
                got["pid"] != w.pid and got["instance"] == state["instance"] and got["ok"]
                and all(a >= b for a, b in zip(got["counters"], state["counters"])),
                f"instance {state['instance']}, counters >= {state['counters']}",
                {k: got.get(k) for k in ("pid", "instance", "counters", "ok")})
        astray = [l for l in res.stderr.splitlines() if "go astray" in l]
        if want_debug:
            r.check(f"{kind}: restore read the runtime layout from the same file, no warning",
                    not astray and (not stripped or f"DWARF from {want_debug}" in res.stderr),
                    f"'DWARF from {want_debug}', no 'go astray'", res.stderr.strip()[-600:])
        else:
            r.check(f"{kind}: restore warns that it cannot patch the thread ids", len(astray) == 1,
                    "one 'go astray' warning", res.stderr.strip()[-600:])
        pauses = gc_pauses(client)
        ok = len(pauses) == 3 and all(isinstance(p, float) and p < MAX_PAUSE_MS for p in pauses)
        if want_debug:
            r.check(f"{kind}: 3 GCs stop a goroutine spinning {SPIN_MS} ms within {MAX_PAUSE_MS} ms "
                    "each, under new thread ids", ok, f"< {MAX_PAUSE_MS} ms", pauses)
        else:
            r.check(f"{kind} (control): without DWARF the same check fails: a GC waits for the "
                    "spin", not ok, f"a pause >= {MAX_PAUSE_MS} ms", pauses)
        copy.kill9()
    w.proc.kill9()
    table.append((kind, report["mode"], report["image_bytes"], report["pause_us"],
                  "passes" if ok else "fails", pauses))
    return report


def text_row(daemon, name, service=rp.SERVICE):
    rows = [row[4] for row in rp.status_socket_rows(daemon.socket)
            if row[0] == service and row[2] == name and row[3] == "text"]
    return rows[0] if rows else None


def daemons(r, exe, debug_file, wrong):
    """primaryd and backupd with debug_file set; then B given another build's file."""
    topo = rp.Topology()
    certs = rp.make_certs(f"10.213.{topo.net}.2")
    with topo:
        up = rp.bring_up(topo, certs, exe, debug_file=debug_file)
        for d, what in ((up.primary, "primaryd"), (up.backup, "backupd")):
            r.check(f"daemons: {what}'s status names debug_file {debug_file}",
                    text_row(d, "debug_info") == debug_file, debug_file, text_row(d, "debug_info"))
        r.check("daemons: primaryd's status says live capture", text_row(up.primary, "capture_mode") == "live",
                "live", text_row(up.primary, "capture_mode"))
        log = up.primary.log_text()  # (which file: an info line, shown with -v)
        r.check("daemons: primaryd's log has no fallback warning", "falling back" not in log,
                "no 'falling back'", log[-1500:])
        log = up.backup.log_text()
        r.check("daemons: backupd's log says once which file a takeover would read",
                log.count(f"DWARF for {exe} from {debug_file} (debug_file)") == 1, "one line",
                log[-1500:])

        # B's file is now another build's: said when the primary says HELLO again.
        up.backup.kill9()
        up.dep.write_service("b", debug_file=wrong)
        backup = up.dep.start_backupd()
        up = up._replace(backup=backup)
        rp.wait_acked(up.primary, backup, at_least=up.primary.field("epoch") + 1)
        di = text_row(backup, "debug_info")
        r.check("daemons: a backup with another build's debug_file says in its status that it "
                "has no DWARF", di and di.startswith("missing"), "missing: ...", di)
        hello = [l for l in backup.log_text().splitlines()
                 if "primary connected from" in l and "no DWARF" in l]
        r.check("daemons: ... and in its log at the primary's HELLO, naming the refused file",
                hello and f"debug_file {wrong} refused" in hello[-1], f"'debug_file {wrong} refused'",
                hello or backup.log_tail())
        said = [l for l in up.primary.log_text().splitlines() if "backup's host" in l and "no DWARF" in l]
        r.check("daemons: ... and the primary hears it at HELLO too: a warning in its log",
                len(said) >= 1, "a line 'the backup's host ... has no DWARF'", up.primary.log_tail())
        r.check("daemons: ... and in its status (backup_debug_info missing)",
                text_row(up.primary, "backup_debug_info") == "missing", "missing",
                text_row(up.primary, "backup_debug_info"))
        state = up.vip.state()
        epoch = up.primary.field("epoch")
        rp.wait_acked(up.primary, backup, at_least=epoch + 2)
        rp.kill_now(up.service, up.primary.proc)
        up.primary.proc.wait_gone(5)
        up.service.wait_gone(5)
        got = rp.wait_for("B to serve tickers through the VIP", lambda: up.vip.state(timeout=1), 30, 0.1)
        r.check("daemons: after A's death B serves the same instance with at least its state",
                got["instance"] == state["instance"] and got["ok"]
                and all(a >= b for a, b in zip(got["counters"], state["counters"])),
                f"instance {state['instance']}, counters >= {state['counters']}", got)
        for pid in rp.running_in(topo, topo.b, exe):
            cs.Proc(pid, "tickers restored in B").kill9()
        backup.kill9()


def main(r):
    top = os.path.realpath(cs.run_dir("debuginfo-bins"))
    kinds = make_kinds(top)
    table = []
    reports = {kind: try_kind(r, kind, *spec, table) for kind, spec in kinds.items()}
    base = reports["unstripped"]["image_bytes"]
    for kind, rep in reports.items():
        if rep["mode"] == "live":
            r.check(f"{kind}: image about the unstripped one's size ({base} bytes)",
                    0.5 * base < rep["image_bytes"] < 1.5 * base, f"{base} bytes +-50%",
                    rep["image_bytes"])
    print(f"{'binary kind':34} {'capture mode':18} {'image bytes':>12} {'pause us':>9}  preempt test")
    for kind, mode, size, pause, pre, pauses in table:
        shown = ", ".join(f"{p:.1f}" if isinstance(p, float) else "none" for p in pauses)
        print(f"{kind:34} {mode:18} {size:12} {pause:9}  {pre} (GC pauses ms: {shown})")
    exe, extra, dbg = kinds["stripped + debug_file"]
    daemons(r, exe, dbg, kinds["stripped + build-id debug file"][2])


if __name__ == "__main__":
    cs.run(main)
