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
	uint64_t a;
	int status, rc = 0;

	if (r->same_tids) {
		rc = inject_put(&r->inj, 256, &want, sizeof(want), &a);
		args.set_tid = a;
		args.set_tid_size = 1;
	}
	if (rc >= 0)
		rc = inject_put(&r->inj, 0, &args, sizeof(args), &a);
	if (rc < 0)
		return restore_fail(r, rc, "thread %d: cannot stage clone3", it->tid);
	long tid = restore_call(r, SYS_clone3, a, sizeof(args));
	if (tid == -EEXIST && r->same_tids) {
		/*
		 * The leader got its old pid but this thread's id is taken here (by
		 * any process of this pid namespace): it gets a new one, and the
		 * cached thread ids are patched as for a new leader (gopatch.c).
		 */
		log_info("thread id %d is taken here, restoring its threads under new ids", it->tid);
		r->same_tids = false;
		args.set_tid = 0;
		args.set_tid_size = 0;
		rc = inject_put(&r->inj, 0, &args, sizeof(args), &a);
		if (rc < 0)
			return restore_fail(r, rc, "thread %d: cannot stage clone3", it->tid);
		tid = restore_call(r, SYS_clone3, a, sizeof(args));
	}
	if (tid < 0)
		return restore_fail(r, tid, "thread %d: cannot recreate it (clone3)", it->tid);
	t->tid = tid;
	t->insn = r->area + AREA_CODE;
	/* The new thread is traced from birth and stops before running a single instruction. */
	rc = tracer_wait_until(tid, &status, now_us() + RESTORE_CALL_TIMEOUT_MS * 1000ULL);
	if (rc >= 0)
		rc = tracer_get_regs(tid, &t->regs);
	return rc < 0 ? restore_fail(r, rc, "thread %d: new thread %ld did not stop", it->tid, tid)
		      : 0;
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
		uint64_t p;
		ret = inject_put(&r->inj, 512, &ss, sizeof(ss), &p);
		if (ret >= 0)
			ret = inject_call_in(&r->inj, t, SYS_sigaltstack, p, 0, 0, 0);
		if (ret < 0)
			return restore_fail(r, ret, "thread %d: cannot restore its signal stack at "
					    "%#lx (sigaltstack)", it->tid, (unsigned long)it->ss_sp);
	}
	if (it->robust_head) {
		ret = inject_call_in(&r->inj, t, SYS_set_robust_list, it->robust_head, it->robust_len, 0, 0);
		if (ret < 0)
			return restore_fail(r, ret, "thread %d: cannot restore its robust list at "
					    "%#lx (set_robust_list)", it->tid,
					    (unsigned long)it->robust_head);
	}
	if (it->rseq_addr) {
		ret = inject_call_in(&r->inj, t, SYS_rseq, it->rseq_addr, it->rseq_len, 0, it->rseq_sig);
		if (ret < 0)
			return restore_fail(r, ret, "thread %d: cannot register its rseq area at "
					    "%#lx (rseq)", it->tid, (unsigned long)it->rseq_addr);
	}
	ret = inject_call_in(&r->inj, t, SYS_set_tid_address, it->clear_tid_addr, 0, 0, 0);
	if (ret < 0)
		return restore_fail(r, ret, "thread %d: cannot set its tid address %#lx "
				    "(set_tid_address)", it->tid, (unsigned long)it->clear_tid_addr);
	uint64_t name;
	ret = inject_put(&r->inj, 512, it->comm, sizeof(it->comm), &name);
	if (ret >= 0)
		ret = inject_call_in(&r->inj, t, SYS_prctl, PR_SET_NAME, name, 0, 0);
	if (ret < 0)
		return restore_fail(r, ret, "thread %d: cannot set its name (PR_SET_NAME)", it->tid);
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
		rc = inject_fault(&r->inj);
		if (rc >= 0)
			rc = tracer_set_regs(t->tid, &t->regs);
		if (rc >= 0 && it->xstate_len)
			rc = tracer_set_xstate(t->tid, it->xstate, it->xstate_len);
		if (rc >= 0 && ptrace(PTRACE_SETSIGMASK, t->tid, sizeof(it->sigmask),
				      &it->sigmask) < 0)
			rc = -errno;
		if (rc < 0)
			return restore_fail(r, rc, "thread %d: cannot set its registers, FPU state "
					    "or signal mask", it->tid);
	}
	return 0;
}
