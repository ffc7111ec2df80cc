#!/usr/bin/env python3
"""Bad input is refused cleanly: one line on stderr, a non-zero exit, nothing started.

Dump of a pid that does not exist; dump of a process that is not Go (`sleep`),
which must say so and leave it running untraced. Then one good image of kvserver
(cgo, run from a private copy of its binary, so a stray restored process is easy
to spot), which must restore (the control: otherwise every case below would pass
for nothing), and damaged copies of it, which must not: each image file in turn
truncated to half its size, each image file in turn with its middle byte flipped,
and finally the image after the executable it was taken from has changed.
"""

import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import checksync as cs  # noqa: E402

PRIMARYD, BACKUPD = "checksync-primaryd", "checksync-backupd"


def unused_pid():
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def expect_dump_error(r, what, run, image, mention=None):
    problems = []
    if run.rc == 0:
        problems.append("exit status 0, expected non-zero")
    err = cs.one_line_error(run.stderr, PRIMARYD)
    if err:
        problems.append(err)
    if os.path.exists(os.path.join(image, "report.json")):
        problems.append("it wrote report.json, expected no image")
    if mention and not re.search(mention, run.stderr):
        problems.append(f"expected the error to match /{mention}/, saw {run.stderr.strip()!r}")
    r.check(f"{what}: refused with one line on stderr", not problems,
            "non-zero exit, one error line, no image", cs.summarize(problems))


def expect_restore_error(r, what, image, binary, mention=None):
    """Restores IMAGE, expecting a clean refusal and no process left running BINARY."""
    run = cs.run_engine([cs.backupd(), "restore", "--image", image])
    problems = []
    if run.rc == 0:
        problems.append("exit status 0, expected non-zero")
    err = cs.one_line_error(run.stderr, BACKUPD)
    if err:
        problems.append(err)
    if run.stdout.strip():
        problems.append(f"stdout {run.stdout.strip()!r}, expected no pid")
    if mention and not re.search(mention, run.stderr, re.I):
        problems.append(f"expected the error to match /{mention}/i, saw {run.stderr.strip()!r}")
    deadline = time.monotonic() + 2  # a husk killed just before backupd exited may still be exiting
    while cs.processes_running(binary) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = cs.processes_running(binary)
    for pid in leftovers:
        cs.Proc(pid, f"process left by a failed restore ({what})").kill9()
    if leftovers:
        problems.append(f"processes left running {binary}: {leftovers}")
    r.check(f"{what}: refused with one line on stderr, nothing left running", not problems,
            "non-zero exit, one error line, no pid, no process", cs.summarize(problems))


def damaged_copies(image, base, kind, damage):
    """Yields (description, path) of copies of IMAGE, each with one file damaged by DAMAGE."""
    for n, rel in enumerate(cs.image_files(image)):
        size = os.path.getsize(os.path.join(image, rel))
        if size == 0:
            cs.log(f"{kind}: {rel} is empty, nothing to damage")
            continue
        copy = os.path.join(base, f"{kind}-{n}")
        shutil.copytree(image, copy)
        what = damage(os.path.join(copy, rel), size)
        yield f"image with {rel} {what}", copy, rel
        shutil.rmtree(copy)


def set_core_version(path, version):
    """Rewrites core.img's format version (bytes 8-11, little endian) and its trailing
    SHA-256, so that the version is the only thing wrong with the image."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[8:12] = struct.pack("<I", version)
    data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()
    with open(path, "wb") as f:
        f.write(data)


def truncate_half(path, size):
    os.truncate(path, size // 2)
    return f"truncated from {size} to {size // 2} bytes"


def flip_middle_byte(path, size):
    with open(path, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)[0]
        f.seek(size // 2)
        f.write(bytes([b ^ 0xFF]))
    return f"byte {size // 2} of {size} flipped"


def main(r):
    base = cs.run_dir("badinput")
    pd = cs.primaryd()

    image = os.path.join(base, "nopid")
    pid = unused_pid()
    expect_dump_error(r, f"dump of non-existent pid {pid}",
                      cs.run_engine([pd, "dump", "--pid", str(pid), "--image", image]), image)

    sleep = subprocess.Popen(["sleep", "100"])
    sleeper = cs.Proc(sleep.pid, "sleep 100", sleep)
    image = os.path.join(base, "sleep")
    expect_dump_error(r, "dump of a non-Go process (sleep)",
                      cs.run_engine([pd, "dump", "--pid", str(sleep.pid), "--image", image]), image,
                      mention=r"\bGo\b")
    sleeper.check_left_running(r, "a refused dump")
    sleeper.kill9()

    # A good image, from a private copy of the binary.
    binary = os.path.join(base, "kvserver")
    shutil.copy2(cs.build_workload("kvserver", "cgo"), binary)
    w = cs.start_workload(binary)
    writer = cs.KVWriter(w.client, max_requests=200)
    writer.start()
    writer.join(60)
    keys = writer.acked()
    image = os.path.join(base, "image")
    cs.dump(w.pid, image)
    w.proc.kill9()

    restored = cs.restore(image, what="control restore")
    state = cs.wait_serving(w.client, restored)
    problems = cs.kv_check(w.client, keys, each=False)
    r.require("control: the undamaged image restores and holds its keys",
              state["pid"] == restored.pid and len(keys) == 200 and not problems,
              "restored pid answering, 200 keys", f"pid {state['pid']}, {len(keys)} keys acknowledged; "
              f"{cs.summarize(problems)}")
    restored.kill9()

    r.require("the image has files besides report.json", cs.image_files(image), "some", "none")
    for what, copy, rel in damaged_copies(image, base, "truncated", truncate_half):
        expect_restore_error(r, f"restore of an {what}", copy, binary, mention=re.escape(rel))
    for what, copy, rel in damaged_copies(image, base, "flipped", flip_middle_byte):
        expect_restore_error(r, f"restore of an {what}", copy, binary, mention=re.escape(rel))

    copy = os.path.join(base, "wrong-version")
    shutil.copytree(image, copy)
    set_core_version(os.path.join(copy, "core.img"), 99)
    expect_restore_error(r, "restore of an image of format version 99 (checksum recomputed)", copy,
                         binary, mention=r"version 99")

    with open(binary, "ab") as f:
        f.write(b"\0")
    expect_restore_error(r, "restore after the executable changed (one byte appended)", image, binary,
                         mention=r"executable|hash")


if __name__ == "__main__":
    cs.run(main)
