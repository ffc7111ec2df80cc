"""End-to-end test harness for CheckSync (python3 standard library only).

A test builds a Go workload from tests/workloads/, starts it, puts it under
load, dumps it with `checksync-primaryd dump`, kills it with SIGKILL, brings it
back with `checksync-backupd restore`, and checks over HTTP that the restored
process holds the state the original had. This module holds the pieces those
tests share; each test file reads top-down as the scenario it checks.

Environment (meson sets all four; a standalone run needs the first two):
  CHECKSYNC_PRIMARYD, CHECKSYNC_BACKUPD  absolute paths of the engine binaries
  CHECKSYNC_TEST_TMP  where builds, images and logs go (default: $TMPDIR/checksync-tests)
  CHECKSYNC_SRC       the source tree (default: two levels above this file)
  CHECKSYNC_GO        the Go toolchain the workloads are built with: a version
                      such as 1.23 (Debian's /usr/lib/go-1.23/bin/go) or a path
                      to a `go` binary (default: `go`, Debian's 1.19)

Design decisions a reader needs:
- Every process a test starts or restores is recorded, and every network
  namespace it creates too; `run()` kills and removes them whatever happens,
  SIGTERM from a meson timeout included.
- A restored process is not our child (the engine's restore exits and the
  process is reparented to init), so it is watched through /proc by pid and
  start time, never waited for.
- Engine output goes to files, not pipes: a restored process that kept an
  inherited pipe open would otherwise make us wait for it forever.
- HTTP clients reach a namespace's addresses by switching only their own
  thread into that namespace (setns), so load threads aimed at different
  hosts can run side by side and the host's interfaces are never touched.
"""

import collections
import concurrent.futures
import contextlib
import ctypes
import fcntl
import hashlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

SRC = os.environ.get("CHECKSYNC_SRC") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKLOADS = os.path.join(SRC, "tests", "workloads")
TMP = os.environ.get("CHECKSYNC_TEST_TMP") or os.path.join(tempfile.gettempdir(), "checksync-tests")
GOPATH = "/usr/share/gocode"
GO = os.environ.get("CHECKSYNC_GO", "")
# Every test namespace's name starts with this (several developers' suites may share a machine).
NETNS_PREFIX = os.environ.get("CHECKSYNC_NETNS_PREFIX", "cs")
TEST_NET = "10.213."  # every test address is 10.213.x.y, and only inside test namespaces

HEAPMAP_ENTRIES = 1000000


class TestError(Exception):
    """A step of a test failed; the message says what was expected and what was seen."""


# ---------------------------------------------------------------- results

class Results:
    """Counts checks; prints one line per check and, at the end, `N passed, M failed`."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, what, ok, expected=None, seen=None):
        if ok:
            self.passed += 1
            print(f"PASS: {what}", flush=True)
        else:
            detail = ""
            if expected is not None or seen is not None:
                detail = f": expected {expected}; saw {seen}"
            self.fail(what + detail)
        return bool(ok)

    def fail(self, message):
        self.failed += 1
        print(f"FAIL: {message}", flush=True)

    def require(self, what, ok, expected=None, seen=None):
        """Like check, but a failure stops the scenario (later steps depend on it)."""
        if not self.check(what, ok, expected, seen):
            raise _Reported()

    def summary(self):
        return f"{self.passed} passed, {self.failed} failed"


class _Reported(Exception):
    """A failure already counted and printed; only unwinds the scenario."""


class _Terminated(BaseException):
    pass


def run(main, *args):
    """Runs main(results, *args), cleans up, prints the summary line, exits 0 or 1.

    An exception in main counts as one failure (a TestError is printed as its
    message, anything else with its traceback), and the checks after it do not
    run. The summary line is always the last line printed.
    """
    results = Results()

    def on_term(signum, frame):
        raise _Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        main(results, *args)
    except _Reported:
        pass
    except TestError as e:
        results.fail(str(e))
    except _Terminated as e:
        results.fail(f"test interrupted by {e}")
    except KeyboardInterrupt:
        results.fail("test interrupted by SIGINT")
    except Exception:
        results.fail("unexpected error:\n" + traceback.format_exc().rstrip())
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let cleanup finish
        if results.passed + results.failed == 0:
            results.fail("no check ran: a test that checks nothing proves nothing")
        for problem in cleanup(keep_files=results.failed > 0):
            results.fail(f"cleanup: {problem}")
    print(results.summary(), flush=True)
    sys.exit(1 if results.failed else 0)


def log(message):
    print(f"  {message}", flush=True)


# ---------------------------------------------------------------- cleanup

_procs = []       # every Proc started or restored by this test
_hosts = []       # every Hosts (namespace pair) created
_run_root = None  # this test's scratch directory, made on first use


def cleanup(keep_files=False):
    """Kills what the test left running and removes its namespaces and scratch files
    (kept if KEEP_FILES). Returns what it could not clean up."""
    problems = []
    for p in reversed(_procs):
        if p.alive():
            log(f"cleanup: killing {p}")
            try:
                p.kill9()
            except TestError as e:
                problems.append(str(e))
    for h in reversed(_hosts):
        problems += h.close()
    global _run_root
    if _run_root and keep_files:
        log(f"kept {_run_root} for inspection")
    elif _run_root:
        shutil.rmtree(_run_root, ignore_errors=True)
    _procs.clear()
    _hosts.clear()
    _run_root = None
    return problems


def run_dir(name):
    """A fresh directory NAME-<rand> in this test's scratch directory
    ($CHECKSYNC_TEST_TMP/runs/SCRIPT-<rand>, removed at the end unless a check failed)."""
    global _run_root
    if _run_root is None:
        base = os.path.join(TMP, "runs")
        os.makedirs(base, exist_ok=True)
        script = os.path.splitext(os.path.basename(sys.argv[0]))[0]
        _run_root = tempfile.mkdtemp(prefix=f"{script}-", dir=base)
    return tempfile.mkdtemp(prefix=f"{name}-", dir=_run_root)


# ---------------------------------------------------------------- engine binaries

def engine_binary(var):
    path = os.environ.get(var)
    if not path:
        raise TestError(f"environment variable {var} is not set (meson test sets it; "
                        f"a standalone run needs it to be the engine binary's absolute path)")
    if not os.path.isabs(path) or not os.access(path, os.X_OK):
        raise TestError(f"{var}={path} is not an absolute path to an executable file")
    return path


def primaryd():
    return engine_binary("CHECKSYNC_PRIMARYD")


def backupd():
    return engine_binary("CHECKSYNC_BACKUPD")


# ---------------------------------------------------------------- building workloads

def build_workload(name, mode):
    """Builds tests/workloads/NAME in MODE ('cgo': the default, dynamically linked
    build; 'static': CGO_ENABLED=0) and returns the binary's path.

    Builds are cached under $CHECKSYNC_TEST_TMP/bin by name, mode and source hash;
    a file lock makes parallel tests wait for one build instead of racing.
    """
    if mode not in ("cgo", "static", "stripped"):
        raise TestError(f"unknown build mode {mode!r}, expected 'cgo', 'static' or 'stripped'")
    src = os.path.join(WORKLOADS, name)
    main_go = os.path.join(src, "main.go")
    if not os.path.isfile(main_go):
        raise TestError(f"no workload {name!r}: {main_go} does not exist")
    with open(main_go, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    gover = go_version()
    bindir = os.path.join(TMP, "bin")
    os.makedirs(bindir, exist_ok=True)
    out = os.path.join(bindir, f"{name}-{mode}-go{gover}-{digest}", name)
    with open(os.path.join(bindir, f".lock-{name}-{mode}-go{gover}"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(out):
            _go_build(src, out, mode)
    _check_linkage(out, mode)
    return out


def go_binary():
    """The `go` command CHECKSYNC_GO names: a version (1.23) or a path; default `go`."""
    if not GO:
        return "go"
    if os.sep in GO:
        return GO
    path = f"/usr/lib/go-{GO}/bin/go"
    if not os.access(path, os.X_OK):
        raise TestError(f"CHECKSYNC_GO={GO}: {path} does not exist (Debian's golang-{GO}-go, "
                        f"from bookworm-backports for versions after 1.19; tests/install-deps.sh installs it)")
    return path


_go_versions = {}


def go_version():
    """The version of the toolchain workloads are built with, e.g. '1.23.5'."""
    go = go_binary()
    if go not in _go_versions:
        r = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0 or not r.stdout.startswith("go"):
            raise TestError(f"{go} env GOVERSION failed: {r.stderr.strip() or r.stdout.strip()}")
        _go_versions[go] = r.stdout.strip()[2:]
    return _go_versions[go]


def _go_build(src, out, mode):
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="", GOTOOLCHAIN="local",
               GOCACHE=os.path.join(TMP, "gocache"))
    env.pop("CGO_ENABLED", None)  # 'cgo' is the default build, whatever the caller's env says
    if mode == "static":
        env["CGO_ENABLED"] = "0"
    flags = ["-ldflags=-s -w"] if mode == "stripped" else []  # no symbols, no DWARF
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    r = subprocess.run([go_binary(), "build", *flags, "-o", tmp, "."], cwd=src, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise TestError(f"go {go_version()} build of {src} ({mode}) failed:\n{r.stderr.strip()}")
    os.rename(tmp, out)


def elf_interp(path):
    """The ELF program interpreter (PT_INTERP) of an x86-64 executable, or None if static."""
    with open(path, "rb") as f:
        hdr = f.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            raise TestError(f"{path} is not a 64-bit ELF file")
        phoff, = struct.unpack_from("<Q", hdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _, p_offset, _, _, p_filesz = struct.unpack("<IIQQQQ", f.read(40))
            if p_type == 3:  # PT_INTERP
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0").decode()
    return None


def _check_linkage(path, mode):
    interp = elf_interp(path)
    if mode == "cgo" and interp is None:
        raise TestError(f"{path}: a cgo build must be dynamically linked, but it has no ELF interpreter")
    if mode == "static" and interp is not None:
        raise TestError(f"{path}: a static build must have no ELF interpreter, but it has {interp}")


# ---------------------------------------------------------------- processes

def _proc_stat(pid):
    """(state, starttime) from /proc/PID/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


class Proc:
    """A process known by pid and start time (so a reused pid is never mistaken for it)."""

    def __init__(self, pid, what, popen=None, log=None):
        st = _proc_stat(pid)
        if st is None:
            raise TestError(f"{what}: pid {pid} does not exist")
        self.pid, self.what, self.popen, self.log = pid, what, popen, log
        self.starttime = st[1]
        _procs.append(self)

    def __str__(self):
        return f"{self.what} (pid {self.pid})"

    def state(self):
        """One-letter state ('R', 'S', 'T', 'Z', ...), or None once the process is gone."""
        st = _proc_stat(self.pid)
        if st is None or st[1] != self.starttime:
            return None
        return st[0]

    def alive(self):
        """False once every thread has exited: gone, or a zombie leader with no live threads
        (a leader can be a zombie while its other threads are still exiting)."""
        state = self.state()
        if state not in ("Z", "X"):
            return state is not None
        try:
            return len(os.listdir(f"/proc/{self.pid}/task")) > 1
        except OSError:
            return False

    def tracer(self):
        """TracerPid from /proc/PID/status (0: not traced), or None if gone."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("TracerPid:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def tasks(self):
        """{tid: (state, TracerPid)} of every thread, from /proc/PID/task/*; {} once gone."""
        out = {}
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return out
        for tid in tids:
            state = tracer = None
            try:
                with open(f"/proc/{self.pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("State:"):
                            state = line.split()[1]
                        elif line.startswith("TracerPid:"):
                            tracer = int(line.split()[1])
            except OSError:
                continue  # exited meanwhile
            out[int(tid)] = (state, tracer)
        return out

    def check_left_running(self, results, after):
        """Checks that the process runs on untraced and unstopped after AFTER (a dump):
        every thread, not only the leader (a dump that let go of the leader alone would
        leave the others stopped or traced)."""
        tasks = self.tasks() if self.alive() else {}
        bad = {tid: st for tid, st in tasks.items() if st[0] in ("t", "T") or st[1] != 0}
        results.check(f"{self} left running, no thread stopped or traced after {after}",
                      tasks and not bad,
                      "alive, every /proc/PID/task/* with state not t/T and TracerPid 0",
                      f"{len(tasks)} threads; stopped or traced: "
                      + (", ".join(f"{t} (state {s}, TracerPid {tp})" for t, (s, tp) in bad.items())
                         or "none"))

    def kill9(self, timeout=15):
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TestError(f"{self} did not die within {timeout}s of SIGKILL")
        self.wait_gone(timeout)

    def wait_gone(self, timeout=15):
        """Waits until the process has exited (a zombie counts: init reaps it soon)."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise TestError(f"{self} still running after {timeout}s (state {self.state()})")
            time.sleep(0.02)


def processes_running(binary):
    """Pids of live processes whose executable is BINARY (zombies have no exe and are skipped)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        if exe == binary or exe == binary + " (deleted)":
            pids.append(int(entry))
    return pids


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- network namespaces

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name):
    """Moves the calling thread (only it) into network namespace NAME for the block."""
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def netns_prefix(netns):
    return ["ip", "netns", "exec", netns] if netns else []


def _ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise TestError(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}")
    return r.stdout


class Hosts:
    """Two test hosts, A and B: network namespaces cs-a-<rand> and cs-b-<rand> joined by
    a veth pair (veth0 in A with 10.213.X.1/24, veth1 in B with 10.213.X.2/24).

    The veth pair is created inside A with its peer placed straight into B, so no
    interface ever exists in the host's namespace. close() kills whatever still
    runs in the namespaces and deletes them; it is safe to call more than once.
    Use as a context manager; cleanup() also closes any left open.
    """

    def __init__(self):
        suffix = secrets.token_hex(3)
        self.a, self.b = f"{NETNS_PREFIX}-a-{suffix}", f"{NETNS_PREFIX}-b-{suffix}"
        net = random.randint(1, 254)
        self.addr = {self.a: f"10.213.{net}.1", self.b: f"10.213.{net}.2"}
        self._created = []

    def __enter__(self):
        _hosts.append(self)
        try:
            for ns in (self.a, self.b):
                _ip("netns", "add", ns)
                self._created.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
                "netns", self.b)
            for ns, dev in ((self.a, "veth0"), (self.b, "veth1")):
                _ip("-n", ns, "addr", "add", self.addr[ns] + "/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        problems = self.close()
        if problems and exc_type is None:
            raise TestError("; ".join(problems))
        for problem in problems:
            log(problem)

    def close(self):
        """Kills what runs in the namespaces, deletes them; returns what it could not."""
        problems, deleted = [], {}
        while self._created:
            ns = self._created.pop()
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in r.stdout.split():
                log(f"cleanup: killing pid {pid} left in netns {ns}")
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            deleted[ns] = r
        left = netns_list() if deleted else []  # one look for all of them
        for ns, r in deleted.items():
            if r.returncode != 0 or ns in left:
                problems.append(f"could not delete netns {ns}: {r.stderr.strip()}")
        return problems


def netns_list():
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------- HTTP

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Client:
    """HTTP/JSON client for one workload address: 127.0.0.1, or a test address
    (10.213.x.y) reached from inside test namespace NETNS.

    Each request opens a new TCP connection.
    """

    def __init__(self, host, port, netns=None):
        if host != "127.0.0.1" and not (host.startswith(TEST_NET) and netns):
            raise TestError(f"refusing to send test traffic to {host}: only 127.0.0.1, "
                            f"or {TEST_NET}x.y from inside a test namespace")
        self.host, self.port, self.netns = host, port, netns

    def __str__(self):
        where = f" from netns {self.netns}" if self.netns else ""
        return f"{self.host}:{self.port}{where}"

    def url(self, path, params=None):
        q = "?" + urllib.parse.urlencode(params) if params else ""
        return f"http://{self.host}:{self.port}{path}{q}"

    def get(self, path, params=None, timeout=5, retries=0, retry_delay=0.2):
        """GET and decode JSON; returns (status, body). Retries connection errors only;
        raises TestError after the last try."""
        url = self.url(path, params)
        for attempt in range(retries + 1):
            try:
                with in_netns(self.netns):
                    try:
                        with _opener.open(url, timeout=timeout) as resp:
                            return resp.status, json.load(resp)
                    except urllib.error.HTTPError as e:
                        body = e.read()
                        return e.code, (json.loads(body) if body else None)
            except (OSError, ValueError, http.client.HTTPException) as e:
                err = e
                if attempt < retries:
                    time.sleep(retry_delay)
        raise TestError(f"GET {url}{' in netns ' + self.netns if self.netns else ''} "
                        f"failed after {retries + 1} tries: {err}")

    def json(self, path, params=None, **kw):
        """GET expecting status 200; returns the decoded body."""
        status, body = self.get(path, params, **kw)
        if status != 200:
            raise TestError(f"GET {self.url(path, params)}: expected status 200, saw {status} {body}")
        return body

    def state(self, **kw):
        return self.json("/state", **kw)

    def force_gc(self, cycles=3):
        """Runs runtime.GC() CYCLES times through /gc; returns (NumGC before, NumGC after)."""
        before = self.state()["num_gc"]
        after = before
        for _ in range(cycles):
            after = self.json("/gc", timeout=30)["num_gc"]
        return before, after


def wait_serving(client, proc, timeout=20):
    """Waits until PROC answers GET /state at CLIENT's address; returns the state.

    Fails early, with the reason, if the process dies meanwhile."""
    deadline = time.monotonic() + timeout
    err = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise TestError(f"{proc} exited (state {proc.state()}) before answering on {client}"
                            + _log_tail(proc))
        try:
            return client.state(timeout=2)
        except TestError as e:
            err = e
        time.sleep(0.05)
    raise TestError(f"{proc} did not answer GET /state on {client} within {timeout}s: {err}"
                    + _log_tail(proc))


def _log_tail(proc):
    if not proc.log or not os.path.exists(proc.log):
        return ""
    with open(proc.log, errors="replace") as f:
        tail = f.read()[-2000:]
    return f"\n  last output of {proc}:\n{tail}"


# ---------------------------------------------------------------- workloads

class Workload:
    """A running workload: its process, a client for it, and its log file."""

    def __init__(self, name, proc, client):
        self.name, self.proc, self.client = name, proc, client

    @property
    def pid(self):
        return self.proc.pid


def start_workload(binary, port=None, host="127.0.0.1", listen=None, netns=None, prefix=()):
    """Starts BINARY -addr LISTEN (default HOST:PORT), in NETNS if given, and waits
    until it answers /state at HOST:PORT. Output goes to a log file in a run dir.
    PREFIX is a command that execs the rest in place (setpriv ...), so the pid stays."""
    port = port or free_port()
    listen = listen or f"{host}:{port}"
    name = os.path.basename(binary)
    logpath = os.path.join(run_dir("log"), f"{name}.log")
    with open(logpath, "wb") as logf:
        popen = subprocess.Popen(netns_prefix(netns) + list(prefix) + [binary, "-addr", listen],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    # `ip netns exec` execs the command in place, so popen.pid is the workload's pid.
    proc = Proc(popen.pid, f"{name} started by the test", popen, logpath)
    client = Client(host, port, netns)
    state = wait_serving(client, proc)
    if state.get("pid") != proc.pid:
        raise TestError(f"{name}: /state pid is {state.get('pid')}, expected the started pid {proc.pid}")
    return Workload(name, proc, client)


def heapmap_checksum(seed, n=HEAPMAP_ENTRIES):
    """The checksum heapmap's /checksum must answer for SEED (hex, as /checksum reports
    it) and -n N, computed here independently of the workload (takes about 2 s)."""
    m = (1 << 64) - 1
    seed = int(seed, 16)
    total = 0
    for k in range(n):
        h = 14695981039346656037
        for c in b"item-%d" % k:
            h = ((h ^ c) * 1099511628211) & m
        total = (total + (h ^ ((k * 0x9E3779B97F4A7C15) & m) ^ (((k * k) & m) ^ seed))) & m
    return format(total, "x")


# ---------------------------------------------------------------- engine

EngineRun = collections.namedtuple("EngineRun", "argv rc stdout stderr")
REPORT_FIELDS = ("pause_us", "dump_us", "image_bytes", "threads")


def run_engine(argv, netns=None, timeout=180):
    """Runs an engine command; returns its EngineRun. Output is collected through files."""
    argv = netns_prefix(netns) + argv
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise TestError(f"`{' '.join(argv)}` did not finish within {timeout}s (killed)")
        out.seek(0)
        err.seek(0)
        return EngineRun(argv, rc, out.read().decode(errors="replace"),
                         err.read().decode(errors="replace"))


def _engine_failed(what, r):
    return TestError(f"{what} failed: `{' '.join(r.argv)}` exited {r.rc}, stderr: "
                     f"{r.stderr.strip() or '(empty)'}")


def dump(pid, image, netns=None, extra=()):
    """checksync-primaryd dump --pid PID --image IMAGE [EXTRA]; returns report.json as a dict."""
    r = run_engine([primaryd(), "dump", "--pid", str(pid), "--image", image, *extra], netns)
    if r.rc != 0:
        raise _engine_failed(f"dump of pid {pid}", r)
    return dump_report(image, f"dump of pid {pid}")


def dump_report(image, what="dump"):
    """The dump's report.json as a dict, with its integer fields checked."""
    path = os.path.join(image, "report.json")
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise TestError(f"{what} exited 0 but {path} is not readable JSON: {e}")
    missing = [k for k in REPORT_FIELDS if not isinstance(report.get(k), int)]
    if missing:
        raise TestError(f"{path}: expected integer fields {', '.join(REPORT_FIELDS)}; "
                        f"missing or not integers: {', '.join(missing)} (saw {report})")
    return report


def restore(image, netns=None, what="restored process"):
    """checksync-backupd restore --image IMAGE; returns the restored Proc."""
    r = run_engine([backupd(), "restore", "--image", image], netns)
    if r.rc != 0:
        raise _engine_failed(f"restore of {image}", r)
    first = r.stdout.splitlines()[0].strip() if r.stdout.strip() else ""
    if not first.isdigit():
        raise TestError(f"restore of {image} exited 0 but its first stdout line is {first!r}, "
                        f"expected a pid")
    return Proc(int(first), what)


def describe_report(report):
    return (f"pause {report['pause_us']} us, dump {report['dump_us']} us, "
            f"image {report['image_bytes']} bytes, {report['threads']} threads")


def image_files(image):
    """Paths (relative to IMAGE) of the image's files, report.json excepted."""
    files = []
    for root, _, names in os.walk(image):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), image)
            if rel != "report.json":
                files.append(rel)
    return sorted(files)


def image_digest(image):
    """{relative path: sha256} of every file of the image, report.json included."""
    out = {}
    for rel in image_files(image) + ["report.json"]:
        with open(os.path.join(image, rel), "rb") as f:
            out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def one_line_error(stderr, prog):
    """None if STDERR is exactly one line `PROG: error: ...`, else what is wrong with it."""
    lines = stderr.rstrip("\n").split("\n") if stderr.strip() else []
    if len(lines) != 1:
        return f"expected one line '{prog}: error: ...' on stderr, saw {len(lines)} lines: {stderr!r}"
    if not lines[0].startswith(f"{prog}: error: "):
        return f"expected stderr to start with '{prog}: error: ', saw {lines[0]!r}"
    return None


# ---------------------------------------------------------------- load

class Load(threading.Thread):
    """A bounded load thread: calls step() every INTERVAL seconds until stop(),
    MAX_SECONDS or MAX_REQUESTS. A step that raises counts as an error and is
    retried after a short pause (the target may be stopped, dead or restoring).

    pause() waits for the request in flight to finish and holds further ones;
    resume(phase) lets them go on, labelled with PHASE. A test pauses the load
    around kill and restore, so that every answer is known to come from the
    process of its phase (a restored process may even reuse the original's pid).
    """

    def __init__(self, client, interval=0.005, max_seconds=300, max_requests=200000):
        super().__init__(daemon=True)
        self.client = client
        self.interval, self.max_seconds, self.max_requests = interval, max_seconds, max_requests
        self.requests = self.errors = 0
        self.last_error = None
        self.phase = 0
        self._gate = threading.Lock()  # held by a step in flight, or by pause()
        self._stop_event = threading.Event()

    def step(self):
        raise NotImplementedError

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        while (not self._stop_event.is_set() and self.requests < self.max_requests
               and time.monotonic() < deadline):
            self.requests += 1
            try:
                with self._gate:
                    self.step()
            except Exception as e:  # noqa: BLE001 - counted and reported by the test
                self.errors += 1
                self.last_error = e
                self._stop_event.wait(0.05)
            self._stop_event.wait(self.interval)

    def pause(self):
        self._gate.acquire()

    def resume(self, phase):
        self.phase = phase
        self._gate.release()

    def stop(self):
        self._stop_event.set()
        self.join(30)


class Readers(Load):
    """Reads PATHS round-robin, checking each answers 200."""

    def __init__(self, client, paths=("/state",), **kw):
        super().__init__(client, **kw)
        self.paths = list(paths)

    def step(self):
        self.client.json(self.paths[self.requests % len(self.paths)], timeout=10)


class KVWriter(Load):
    """Writes k0, k1, k2, ... to a kvserver, one at a time, each with a value unique
    to this writer. A write that fails is retried with the same key and value.
    Each acknowledged write is recorded with the load's phase when it was sent
    (an answer in flight when the phase changes came from the old server) and
    the monotonic time the answer arrived: a write acknowledged before a dump
    started is in that dump's image."""

    def __init__(self, client, **kw):
        kw.setdefault("interval", 0.002)
        super().__init__(client, **kw)
        self.token = secrets.token_hex(4)
        self.next = 0
        self.acks = []  # (index, phase, time); appended only by this thread
        self.lock = threading.Lock()

    @staticmethod
    def key(i):
        return f"k{i}"

    def value(self, i):
        return f"v{i}-{self.token}"

    def step(self):
        i, phase = self.next, self.phase
        status, body = self.client.get("/set", {"k": self.key(i), "v": self.value(i)}, timeout=5)
        if status != 200 or not body.get("ok"):
            raise TestError(f"/set k{i}: status {status} {body}")
        with self.lock:
            self.acks.append((i, phase, time.monotonic()))
        self.next = i + 1

    def acked(self, phase=None, before=None):
        """{key: value} of the writes acknowledged in PHASE (any if None), before time BEFORE."""
        with self.lock:
            acks = list(self.acks)
        return {self.key(i): self.value(i) for i, p, t in acks
                if (phase is None or p == phase) and (before is None or t < before)}

    def wait_acks(self, count, phase=None, timeout=20):
        """Waits until COUNT writes have been acknowledged in PHASE (any if None)."""
        deadline = time.monotonic() + timeout
        while len(self.acked(phase)) < count:
            if time.monotonic() > deadline or not self.is_alive():
                raise TestError(f"expected {count} writes acknowledged (phase {phase}) within "
                                f"{timeout}s, saw {len(self.acked(phase))} "
                                f"(last error: {self.last_error})")
            time.sleep(0.05)


def kv_write(client, prefix, n, token, retries=2):
    """Writes PREFIX0..PREFIX{n-1} to a kvserver one at a time, each value
    v{i}-TOKEN; returns {key: value}, all acknowledged (else TestError)."""
    out = {}
    for i in range(n):
        k, v = f"{prefix}{i}", f"v{i}-{token}"
        status, body = client.get("/set", {"k": k, "v": v}, timeout=5, retries=retries)
        if status != 200 or not body.get("ok"):
            raise TestError(f"/set {k} on {client}: {status} {body}")
        out[k] = v
    return out


KV_CHECK_CONCURRENCY = 16


def kv_check(client, expected, each=True):
    """Problems (a list of strings, one per bad key, empty if none) with EXPECTED
    ({key: value}) in a kvserver.

    Reads every key in one /items request; with EACH, also reads every key with
    its own /get (otherwise a sample of 50). The /gets go KV_CHECK_CONCURRENCY at a
    time: under output commit each reply waits for its epoch's acknowledgement, which
    one at a time made a check of 50 keys take seconds."""
    problems = []
    items = client.json("/items", timeout=30)
    for k, v in expected.items():
        if k not in items:
            problems.append(f"{k}: expected {v!r}, missing from /items")
        elif items[k] != v:
            problems.append(f"{k}: expected {v!r}, /items has {items[k]!r}")
    keys = [k for k in expected if items.get(k) == expected[k]]
    if not each and len(keys) > 50:
        keys = random.sample(keys, 50)
    with concurrent.futures.ThreadPoolExecutor(max_workers=KV_CHECK_CONCURRENCY) as pool:
        answers = pool.map(lambda k: client.get("/get", {"k": k}, timeout=10, retries=2), keys)
        for k, (status, body) in zip(keys, answers):
            if status != 200 or body.get("v") != expected[k]:
                problems.append(f"{k}: expected {expected[k]!r}, /get answered {status} {body}")
    return problems


def summarize(problems, limit=5):
    """A short description of a list of problems: how many, and the first few."""
    if not problems:
        return "none"
    if len(problems) == 1:
        return problems[0]
    more = ", ..." if len(problems) > limit else ""
    return f"{len(problems)} problems: " + "; ".join(problems[:limit]) + more
