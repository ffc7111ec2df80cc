/*
 * tracer.h - ptrace primitives shared by capture and restore.
 *
 * Both sides drive a stopped process the same way: stop its threads, run a
 * single system call inside one of them, read and write registers. Injected
 * calls execute a `syscall` instruction that already exists in the target
 * (capture) or that restore placed there, under PTRACE_SINGLESTEP, so no
 * code of ours ever runs inside the service.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include <stdbool.h>
#include <sys/user.h>

struct tracee {
	pid_t tid;
	struct user_regs_struct regs; /* as found at the stop; put back on resume */
	uint64_t insn;                /* address of a `syscall` instruction in the tracee */
	int pending_sig;              /* a signal that arrived while we held it */
	bool pending_fault;           /* ... raised by the thread's own instruction */
	pid_t last_clone;             /* child of the last injected clone, if any */
	unsigned timeout_ms;          /* an injected call that takes longer fails (0: no limit) */
};

/* PTRACE_SEIZE and PTRACE_INTERRUPT one thread and wait until it is stopped. */
int tracer_seize(pid_t tid, unsigned long options);
/* After PTRACE_INTERRUPT: wait for the thread's stop (as tracer_interrupt_wait does). */
int tracer_wait_stop(struct tracee *t);
int tracer_interrupt_wait(struct tracee *t);

/* Wait for a thread's next stop; forwards unrelated signals to it. Returns the wait status. */
int tracer_wait(pid_t tid, int *status);
/* The same, giving up with -ETIMEDOUT at deadline_us (now_us() clock; 0: never). */
int tracer_wait_until(pid_t tid, int *status, uint64_t deadline_us);

/*
 * Run one syscall in t; returns 0 (result in *ret) or -errno for a ptrace
 * failure, -ETIMEDOUT when it took longer than t->timeout_ms (t is then
 * left inside the call: the caller kills the process).
 */
int tracer_syscall(struct tracee *t, long *ret, long nr, uint64_t a1, uint64_t a2, uint64_t a3,
		   uint64_t a4, uint64_t a5, uint64_t a6);

#define tracer_call(t, ret, nr, ...) tracer_syscall_n(t, ret, nr, __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define tracer_syscall_n(t, ret, nr, a, b, c, d, e, f, ...)                                        \
	tracer_syscall(t, ret, nr, (uint64_t)(a), (uint64_t)(b), (uint64_t)(c), (uint64_t)(d),    \
		       (uint64_t)(e), (uint64_t)(f))

int tracer_get_regs(pid_t tid, struct user_regs_struct *regs);
int tracer_set_regs(pid_t tid, const struct user_regs_struct *regs);
/* XSAVE area; *len is the buffer size in, bytes filled out. */
int tracer_get_xstate(pid_t tid, void *buf, uint32_t *len);
int tracer_set_xstate(pid_t tid, const void *buf, uint32_t len);

/* Put back t's registers and let it run (detaching if detach is set). */
int tracer_resume(struct tracee *t, int detach);

/* Memory of a stopped tracee through /proc/PID/mem (ignores page protections). */
int tracer_mem_open(pid_t pid, int writable);
int tracer_peek(int memfd, uint64_t addr, void *buf, size_t len);
int tracer_poke(int memfd, uint64_t addr, const void *buf, size_t len);
