/*
 * threads.c - recreating every thread with its registers and kernel state.
 *
 * Threads are cloned from the leader by injected clone3() calls, with the
 * old thread ids when the husk itself got the old pid: then nothing the
 * runtime or glibc cached about thread ids (Go's m.procid, which preemption
 * signals go to; glibc's pthread tid) needs patching. Each new thread
 * re-registers from inside what only a thread can register for itself:
 * alternate signal stack, robust futex list, rseq area, clear-child-tid.
 */
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "restore.h"
#include "util.h"

#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ERESTART_RESTARTBLOCK 516

#define THREAD_CLONE_FLAGS                                                                         \
	(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM)

static int clone_thread(struct restore *r, const struct image_thread *it, struct tracee *t)
{
	struct clone_args args = {
		.flags = THREAD_CLONE_FLAGS,
		.stack = r->area + AREA_STACK,
		.stack_size = AREA_STACK_LEN,
	};
	pid_t want = it->tid;
	int status;

	if (r->same_tids) {
		args.set_tid = restore_scratch_put(r, 256, &want, sizeof(want));
		args.set_tid_size = 1;
	}
	uint64_t a = restore_scratch_put(r, 0, &args, sizeof(args));
	long tid = restore_call(r, SYS_clone3, a, sizeof(args));
	if (tid < 0)
		return log_error_errno(tid, "cannot recreate thread %d", it->tid);
	t->tid = tid;
	t->insn = r->area + AREA_CODE;
	/* The new thread is traced from birth and stops before running a single instruction. */
	int rc = tracer_wait(tid, &status);
	if (rc < 0)
		return log_error_errno(rc, "new thread %ld vanished", tid);
	return tracer_get_regs(tid, &t->regs);
}

static long thread_call(struct tracee *t, long nr, uint64_t a1, uint64_t a2, uint64_t a3,
			uint64_t a4)
{
	long ret;
	int rc = tracer_syscall(t, &ret, nr, a1, a2, a3, a4, 0, 0);
	return rc < 0 ? rc : ret;
}

static int restore_thread_kernel_state(struct restore *r, struct tracee *t,
				       const struct image_thread *it)
{
	long ret;

	if (!(it->ss_flags & SS_DISABLE)) {
		struct {
			uint64_t sp;
			int32_t flags, pad;
			uint64_t size;
		} ss = {.sp = it->ss_sp, .flags = 0, .size = it->ss_size};
		uint64_t p = restore_scratch_put(r, 512, &ss, sizeof(ss));
		ret = thread_call(t, SYS_sigaltstack, p, 0, 0, 0);
		if (ret < 0)
			return log_error_errno(ret, "thread %d: cannot restore signal stack",
					       it->tid);
	}
	if (it->robust_head) {
		ret = thread_call(t, SYS_set_robust_list, it->robust_head, it->robust_len, 0, 0);
		if (ret < 0)
			return log_error_errno(ret, "thread %d: cannot restore robust list",
					       it->tid);
	}
	if (it->rseq_addr) {
		ret = thread_call(t, SYS_rseq, it->rseq_addr, it->rseq_len, 0, it->rseq_sig);
		if (ret < 0)
			return log_error_errno(ret, "thread %d: cannot register rseq", it->tid);
	}
	ret = thread_call(t, SYS_set_tid_address, it->clear_tid_addr, 0, 0, 0);
	if (ret < 0)
		return log_error_errno(ret, "thread %d: cannot set tid address", it->tid);
	uint64_t name = restore_scratch_put(r, 512, it->comm, sizeof(it->comm));
	thread_call(t, SYS_prctl, PR_SET_NAME, name, 0, 0);
	return 0;
}

/*
 * A thread held inside a system call was dumped with the kernel's restart
 * code in rax. No kernel will act on it here, so do what the signal path
 * would have: re-issue the call, or report EINTR where the kernel's
 * restart block is lost with the old process.
 */
static struct user_regs_struct regs_for_resume(const struct image_thread *it)
{
	struct user_regs_struct regs = it->regs;

	if ((long)regs.orig_rax >= 0) {
		switch ((long)regs.rax) {
		case -ERESTARTSYS:
		case -ERESTARTNOINTR:
		case -ERESTARTNOHAND:
			regs.rax = regs.orig_rax;
			regs.rip -= 2;
			break;
		case -ERESTART_RESTARTBLOCK:
			regs.rax = -EINTR;
			break;
		}
	}
	regs.orig_rax = -1;
	return regs;
}

int restore_threads(struct restore *r)
{
	const struct image *img = r->img;

	for (size_t i = 1; i < img->n_threads; i++) {
		int rc = clone_thread(r, &img->threads[i], &r->threads[i]);
		if (rc < 0)
			return rc;
		r->n_threads = i + 1;
	}
	for (size_t i = 0; i < r->n_threads; i++) {
		int rc = restore_thread_kernel_state(r, &r->threads[i], &img->threads[i]);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Registers last: after this no more calls can be injected into the thread. */
int restore_threads_finish(struct restore *r)
{
	const struct image *img = r->img;

	for (size_t i = 0; i < r->n_threads; i++) {
		const struct image_thread *it = &img->threads[i];
		struct tracee *t = &r->threads[i];
		int rc;

		t->regs = regs_for_resume(it);
		rc = tracer_set_regs(t->tid, &t->regs);
		if (rc >= 0 && it->xstate_len)
			rc = tracer_set_xstate(t->tid, it->xstate, it->xstate_len);
		if (rc >= 0 && ptrace(PTRACE_SETSIGMASK, t->tid, sizeof(it->sigmask),
				      &it->sigmask) < 0)
			rc = -errno;
		if (rc < 0)
			return log_error_errno(rc, "cannot set the registers of thread %d",
					       it->tid);
	}
	return 0;
}
