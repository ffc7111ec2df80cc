#!/usr/bin/env python3
"""seccomp_exec.py [--nnp] ERRNO... -- COMMAND...: installs one seccomp filter per
ERRNO, in order, each making uname(2) fail with that errno (everything else is
allowed), then execs COMMAND under them.

With --nnp it sets no_new_privs first; without, the filters are installed on
the strength of CAP_SYS_ADMIN (run it as root). Filters outlive exec, so
COMMAND may be setpriv dropping to another user: the test then has a process
that holds filters it could no longer install itself. Of filters that give
the same action, the newest one's errno is what uname sees, so the order is
visible from outside.
"""

import ctypes
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
AUDIT_ARCH_X86_64 = 0xC000003E
NR_UNAME = 63
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def insn(code, k, jt=0, jf=0):
    return struct.pack("HBBI", code, jt, jf, k)


def uname_filter(errno):
    return b"".join([
        insn(0x20, 4),                            # ld  [arch]
        insn(0x15, AUDIT_ARCH_X86_64, 1, 0),      # jeq x86_64 ? next+1 : next
        insn(0x06, RET_ALLOW),                    # (another arch: not ours to judge)
        insn(0x20, 0),                            # ld  [nr]
        insn(0x15, NR_UNAME, 0, 1),               # jeq uname
        insn(0x06, RET_ERRNO | errno),
        insn(0x06, RET_ALLOW),
    ])


def main(argv):
    nnp = argv[:1] == ["--nnp"]
    if nnp:
        argv = argv[1:]
    if "--" not in argv:
        sys.exit(__doc__)
    sep = argv.index("--")
    errnos, command = [int(e) for e in argv[:sep]], argv[sep + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if nnp and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit(f"seccomp_exec: PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")
    for e in errnos:
        code = uname_filter(e)
        buf = ctypes.create_string_buffer(code, len(code))
        prog = SockFprog(len(code) // 8, ctypes.addressof(buf))
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
            sys.exit(f"seccomp_exec: PR_SET_SECCOMP: {os.strerror(ctypes.get_errno())}")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
