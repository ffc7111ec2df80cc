/*
 * inject.h - system calls run inside a stopped process, for capture and
 * restore alike.
 *
 * Both sides stop a thread, point it at a `syscall` instruction (one found
 * in the target's vDSO, or one restore planted in its own area), and pass
 * arguments and results through a scratch area mapped inside the target.
 * This file is that plumbing, once, with one error convention: every call
 * returns the syscall's result, or a negative errno, whether the kernel
 * refused the call, ptrace failed, or the call took longer than its
 * deadline (-ETIMEDOUT). Callers name the syscall and the resource in
 * their message; nothing here logs.
 *
 * A fault point for tests (CHECKSYNC_FAULT=SIDE-STEP:N[:hang], as
 * CRIU_FAULT): the Nth checked operation of STEP (a scratch write or read,
 * an injected call, or any operation the caller checks with inject_fault)
 * fails with ECANCELED; with :hang an injected call is replaced by pause()
 * so that its deadline has to end it. Tests reach every error path that
 * way without mocking the kernel.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proc.h"
#include "tracer.h"

struct inject_fault {
	char step[32];
	unsigned n;
	bool hang;
};

struct injector {
	struct tracee *t;	 /* the thread calls run in unless another is named */
	int memfd;		 /* the target's /proc/PID/mem, writable for restore */
	uint64_t scratch;	 /* the scratch area in the target; 0: none */
	size_t scratch_len;
	unsigned timeout_ms;	 /* deadline of one call; 0: none */
	const char *step;	 /* what the caller is doing, for fault points */
	unsigned ops;		 /* checked operations in this step */
	struct inject_fault fault; /* none when n == 0 */
};

/* A `syscall` instruction (0f 05) in the target's vDSO, read through memfd. */
int inject_find_syscall_insn(int memfd, const struct proc_vma *vmas, size_t n, uint64_t *insn);

/* Read CHECKSYNC_FAULT for SIDE ("restore"); a malformed value is returned as -EINVAL. */
int inject_read_fault(struct inject_fault *f, const char *side);
/* Start a new step: its name for the fault point, its operations counted from 1. */
void inject_step(struct injector *in, const char *step);
/* One checked operation: 0, or -ECANCELED when the fault point says so. */
int inject_fault(struct injector *in);

/* Map / unmap an anonymous read-write scratch area of len bytes in the target. */
int inject_scratch_map(struct injector *in, size_t len);
int inject_scratch_unmap(struct injector *in);
/* Copy len bytes to the scratch area at off; *addr gets their address in the target. */
int inject_put(struct injector *in, size_t off, const void *p, size_t len, uint64_t *addr);
/* Read back len bytes the target wrote at addr. */
int inject_get(struct injector *in, uint64_t addr, void *p, size_t len);

/* Run syscall nr in thread t (NULL: in->t); its result, or a negative errno. */
long inject_syscall(struct injector *in, struct tracee *t, long nr, uint64_t a1, uint64_t a2,
		    uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6);
#define inject_call(in, nr, ...) inject_call_n(in, NULL, nr, __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define inject_call_in(in, t, nr, ...) inject_call_n(in, t, nr, __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define inject_call_n(in, t, nr, a, b, c, d, e, f, ...)                                            \
	inject_syscall(in, t, nr, (uint64_t)(a), (uint64_t)(b), (uint64_t)(c), (uint64_t)(d),     \
		       (uint64_t)(e), (uint64_t)(f))
