"""Booted systemd for tests: a Debian 12 root file system, the build installed
into it with `meson install --destdir`, booted with `systemd-nspawn --boot`
inside one of the test's network namespaces (one container per host).

Built on checksync.py; everything started here is recorded for its cleanup.

Design decisions a reader needs:
- The root file system is made once with debootstrap (Debian's packages
  only) and cached under $CHECKSYNC_TEST_TMP/nspawn/base, keyed by the
  package list; each container gets it read-only under an overlay of its
  own, so a test run never changes the cache.
- Containers are driven only as an operator would: `systemctl`,
  `journalctl` and the daemons' own `status`, run in the container through
  `systemd-run --wait -P` so they run under the container's systemd and its
  seccomp filter. nsenter is used only to reach the container's systemd
  with those commands (a process entered with nsenter escapes nspawn's
  seccomp filter, so nothing else runs that way).
- PID 1 of this machine is not systemd: nspawn runs with --register=no
  and --keep-unit (no machined to register with, no scope to create).
- nspawn's default seccomp filter denies pidfd_getfd, which primaryd needs
  to take the service's userfaultfd, and its default capabilities lack
  CAP_SYS_TIME, which backupd needs to give a restored process a time
  namespace; the containers get both (--system-call-filter=pidfd_getfd
  --capability=CAP_SYS_TIME), as README tells operators to.
- "Host dies" is a SIGKILL of the container's init: the kernel then kills
  every process in its pid namespace at once.
"""

import fcntl
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import time

import checksync as cs

MIRROR = "http://deb.debian.org/debian"
# systemd, and the tools the tests use inside (curl for probes, iproute2
# for the hook); the daemons' libraries are added from the build (ldd).
PACKAGES = ["systemd", "systemd-sysv", "dbus", "iproute2", "procps", "curl",
            "libevent-2.1-7", "libevent-openssl-2.1-7", "libmsgpackc2", "libssl3",
            "libsystemd0", "libdw1", "libelf1", "libinih1"]


def runtime_packages(binaries):
    """The Debian packages that own the shared libraries BINARIES load (ldd, dpkg -S):
    whatever the build links today, the containers get, without a list to keep."""
    libs = set()
    for b in binaries:
        r = subprocess.run(["ldd", b], capture_output=True, text=True, timeout=60)
        for line in r.stdout.splitlines():
            parts = line.split("=>")
            path = (parts[1] if len(parts) > 1 else parts[0]).split("(")[0].strip()
            if path.startswith("/"):
                libs.add(os.path.realpath(path))
    owners = _dpkg_owners(sorted(libs))
    # merged /usr: dpkg may know a library only by its /lib spelling
    alt = _dpkg_owners(sorted(l.replace("/usr/lib/", "/lib/", 1) for l in libs if l not in owners))
    return sorted(set(owners.values()) | set(alt.values()))


def _dpkg_owners(paths):
    """{path: package} for those of PATHS dpkg knows, from one `dpkg -S` (each call
    reads dpkg's whole file list: a second or more on a loaded machine)."""
    if not paths:
        return {}
    r = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True, timeout=120)
    owners = {}
    for line in r.stdout.splitlines():
        pkg, sep, path = line.partition(": ")
        if sep and path.strip() in paths and path.strip() not in owners:
            owners[path.strip()] = pkg.split(":")[0].split(",")[0].strip()
    return owners


@functools.lru_cache(maxsize=None)
def base_root():
    """The cached Debian 12 root file system, made with debootstrap on first use, with
    PACKAGES and the packages of the libraries the daemons link. Found once per test
    process: every container's root is a copy of it (make_root)."""
    packages = sorted(set(PACKAGES) | set(runtime_packages([cs.primaryd(), cs.backupd()])))
    key = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]
    cache = os.path.join(cs.TMP, "nspawn")
    os.makedirs(cache, exist_ok=True)
    root = os.path.join(cache, f"base-{key}")
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(root, ".complete")):
            return root
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.monotonic()
        cs.log(f"debootstrap bookworm into {root} (once per cache)")
        r = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(packages),
                            "bookworm", root, MIRROR], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=1500)
        if r.returncode != 0:
            raise cs.TestError(f"debootstrap failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
        # No getty on a console nobody reads; no first-boot questions.
        for unit in ("console-getty.service", "getty@tty1.service"):
            subprocess.run(["systemctl", "--root", root, "mask", unit], capture_output=True)
        with open(os.path.join(root, "etc", "hostname"), "w") as f:
            f.write("checksync-test\n")
        open(os.path.join(root, ".complete"), "w").close()
        cs.log(f"root file system ready in {time.monotonic() - t0:.0f} s")
    return root


class Overlay:
    """A container's root file system: the cached base, read-only, under an overlay
    whose upper layer (in the run dir) takes the build and everything the container
    writes. A copy of the base would cost each container seconds, and as much again to
    remove. checksync's cleanup unmounts it (before it removes or keeps the run dir)."""

    def __init__(self, base, where):
        self.root = os.path.join(where, "root")
        upper, work = os.path.join(where, "upper"), os.path.join(where, "work")
        for d in (self.root, upper, work):
            os.makedirs(d)
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={base},upperdir={upper},workdir={work}", self.root],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise cs.TestError(f"mounting the overlay root {self.root} failed: {r.stderr.strip()}")
        self.mounted = True
        cs._hosts.append(self)  # closed by checksync's cleanup, even on SIGTERM

    def close(self):
        """Unmounts the root (lazily if a process still holds it); returns problems."""
        if not self.mounted:
            return []
        self.mounted = False
        r = subprocess.run(["umount", self.root], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return []
        r = subprocess.run(["umount", "-l", self.root], capture_output=True, text=True, timeout=60)
        return [] if r.returncode == 0 else [f"cannot unmount {self.root}: {r.stderr.strip()}"]


def make_root(name, build_dir):
    """A container root NAME: the base under an overlay (or, where overlayfs cannot be
    mounted, a copy of it), with the build installed into it."""
    where = os.path.join(cs.run_dir("nspawn"), name)
    try:
        root = Overlay(base_root(), where).root
    except cs.TestError as e:
        cs.log(f"{e}; copying the root file system instead")
        root = os.path.join(where, "copy")
        os.makedirs(where, exist_ok=True)
        r = subprocess.run(["cp", "-a", "--reflink=auto", base_root(), root], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise cs.TestError(f"copying the root file system failed: {r.stderr.strip()}")
    r = subprocess.run(["meson", "install", "-C", build_dir, "--no-rebuild", "--quiet", "--destdir", root],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise cs.TestError(f"meson install --destdir {root} failed:\n{r.stdout}{r.stderr}")
    with open(os.path.join(root, "etc", "hostname"), "w") as f:
        f.write(name + "\n")
    return root


def put(root, path, text=None, src=None, mode=0o644):
    """Writes TEXT (or copies SRC) to PATH inside ROOT with MODE, owned by root."""
    dest = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if src is not None:
        shutil.copyfile(src, dest)
    else:
        with open(dest, "w") as f:
            f.write(text)
    os.chown(dest, 0, 0)
    os.chmod(dest, mode)
    return dest


class Run:
    """The result of a command in a container."""

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.stdout, self.stderr = argv, rc, out, err

    def __str__(self):
        return f"`{' '.join(self.argv)}` exited {self.rc}: {(self.stdout + self.stderr).strip()[-1500:]}"


class Container:
    """One booted container NAME on ROOT in network namespace NETNS."""

    def __init__(self, name, root, netns):
        self.name, self.root, self.netns = name, root, netns
        self.nspawn = None
        self.leader = None
        self.boots = 0
        self.console = os.path.join(os.path.dirname(root), f"{name}.console")

    def __str__(self):
        return f"container {self.name} (netns {self.netns}, init pid {self.leader})"

    def boot(self, timeout=90):
        """Boots the container and waits until its systemd has finished starting up."""
        argv = ["systemd-nspawn", "--boot", "--quiet", "--register=no", "--keep-unit",
                "-D", self.root, "-M", self.name, "--console=read-only",
                f"--network-namespace-path=/run/netns/{self.netns}",
                "--system-call-filter=pidfd_getfd", "--capability=CAP_SYS_TIME",
                "--resolv-conf=off", "--timezone=off",
                "--link-journal=no"]
        log = open(self.console, "a")
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        log.close()
        self.nspawn = cs.Proc(popen.pid, f"systemd-nspawn of {self.name}", popen, log=self.console)
        self.boots += 1
        self.leader = None

        def up():
            if popen.poll() is not None:
                raise cs.TestError(f"systemd-nspawn of {self.name} exited {popen.returncode}:\n"
                                   f"{self.console_tail()}")
            if self.leader is None:
                self.leader = self._find_leader()
                if self.leader is None:
                    return None
            r = self.run("systemctl", "is-system-running", timeout=10)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if state in ("starting", "initializing", ""):
                return None
            raise cs.TestError(f"{self}: is-system-running says {state!r}")
        t0 = time.monotonic()
        state = _wait(f"{self.name} booted", up, timeout)
        cs.log(f"{self} booted ({state}) in {time.monotonic() - t0:.1f} s")
        return state

    def _find_leader(self):
        """The container's init: the child of nspawn (its pid namespace's pid 1)."""
        try:
            with open(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children") as f:
                kids = [int(p) for p in f.read().split()]
        except OSError:
            return None
        for pid in kids:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "systemd":
                        return pid
            except OSError:
                continue
        return None

    def console_tail(self, n=3000):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return "(no console log)"

    def run(self, *argv, timeout=60):
        """Runs a systemd client (systemctl, journalctl, systemd-run) in the container."""
        full = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C", "--", *argv]
        try:
            r = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Run(list(argv), -1, "", f"timed out after {timeout}s")
        return Run(list(argv), r.returncode, r.stdout, r.stderr)

    def probe(self, *argv, timeout=60):
        """Runs ARGV as a transient unit of the container's systemd and returns its output."""
        return self.run("systemd-run", "--wait", "--pipe", "--quiet", "--collect",
                        "--service-type=exec", *argv, timeout=timeout)

    def systemctl(self, *args, timeout=90):
        return self.run("systemctl", *args, timeout=timeout)

    def show(self, unit, *props):
        """{property: value} of UNIT from `systemctl show`."""
        r = self.systemctl("show", unit, "-p", ",".join(props))
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def journal(self, unit, lines=200):
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat", "-n", str(lines)).stdout

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def kill(self):
        """The host dies: SIGKILL to the container's init takes its whole pid namespace."""
        if self.leader:
            try:
                os.kill(self.leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.nspawn and self.nspawn.popen:
            try:
                self.nspawn.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.nspawn.kill9()
        self.leader = None

    def reboot(self, timeout=120):
        """`systemctl reboot` in the container; nspawn exits 133 for it, and we boot again."""
        self.systemctl("reboot", timeout=30)
        try:
            rc = self.nspawn.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise cs.TestError(f"{self} did not go down within {timeout}s of `systemctl reboot`:\n"
                               f"{self.console_tail()}")
        if rc != 133:
            raise cs.TestError(f"systemd-nspawn of {self.name} exited {rc} on reboot, expected 133")
        return self.boot()

    def poweroff(self, timeout=120):
        if self.leader is None:
            return
        self.systemctl("poweroff", timeout=30)
        try:
            self.nspawn.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.leader = None


def _wait(what, fn, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = repr(v)
        except cs.TestError as e:
            if time.monotonic() > deadline or "exited" in str(e):
                raise
            last = str(e)
        if time.monotonic() > deadline:
            raise cs.TestError(f"expected {what} within {timeout}s; last seen: {last}")
        time.sleep(interval)


if __name__ == "__main__":
    # tests/run-tests.sh makes the root file system ahead (debootstrap: minutes, mostly
    # the download) while the sanitizer build compiles; the systemd test then finds it.
    try:
        print(base_root())
    except cs.TestError as e:
        print(f"nspawn.py: {e}")  # the systemd test tries again and says so itself
        raise SystemExit(1)
