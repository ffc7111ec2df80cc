/*
 * tracer.c - see tracer.h.
 */
#include "tracer.h"

#include <elf.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

int tracer_seize(pid_t tid, unsigned long options)
{
	if (ptrace(PTRACE_SEIZE, tid, 0, options) < 0)
		return -errno;
	return 0;
}

int tracer_wait(pid_t tid, int *status)
{
	return tracer_wait_until(tid, status, 0);
}

static int wait_result(int status)
{
	return WIFEXITED(status) || WIFSIGNALED(status) ? -ESRCH : 0;
}

/*
 * A stop of a tracee raises SIGCHLD in its tracer: with SIGCHLD blocked,
 * sigtimedwait() sleeps until one may have happened or the deadline comes,
 * and waitpid(WNOHANG) says whether it was ours. No SIGCHLD handler is
 * needed, so the daemons keep SIGCHLD at its default (child.h).
 */
int tracer_wait_until(pid_t tid, int *status, uint64_t deadline_us)
{
	sigset_t chld, old;
	int r = -ETIMEDOUT;

	if (!deadline_us) {
		for (;;) {
			pid_t p = waitpid(tid, status, __WALL);
			if (p >= 0)
				return wait_result(*status);
			if (errno != EINTR)
				return -errno;
		}
	}
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &chld, &old);
	for (;;) {
		pid_t p = waitpid(tid, status, __WALL | WNOHANG);
		if (p < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (p > 0) {
			r = wait_result(*status);
			break;
		}
		uint64_t now = now_us();
		if (now >= deadline_us)
			break;
		uint64_t left = deadline_us - now;
		struct timespec ts = {.tv_sec = left / 1000000, .tv_nsec = left % 1000000 * 1000};
		(void)sigtimedwait(&chld, NULL, &ts);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

/* Keep a signal the thread was about to take, for tracer_resume() to give back. */
static void hold_signal(struct tracee *t, int sig)
{
	siginfo_t si;

	t->pending_sig = sig;
	t->pending_fault = (sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL ||
			    sig == SIGTRAP || sig == SIGSYS) &&
			   ptrace(PTRACE_GETSIGINFO, t->tid, 0, &si) == 0 && si.si_code > 0;
}

int tracer_interrupt_wait(struct tracee *t)
{
	if (ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) < 0)
		return -errno;
	return tracer_wait_stop(t);
}

int tracer_wait_stop(struct tracee *t)
{
	int status, r;

	for (;;) {
		r = tracer_wait(t->tid, &status);
		if (r < 0)
			return r;
		if (status >> 16 == PTRACE_EVENT_STOP)
			break;
		/*
		 * A signal-delivery-stop came first. Keep the signal for the resume
		 * instead of delivering it now, so the thread does not run a handler
		 * while we are trying to hold it still.
		 */
		int sig = WSTOPSIG(status);
		if (!(status >> 8 & ~0xff) && sig != SIGTRAP) {
			hold_signal(t, sig);
			log_debug("thread %d: holding signal %d for resume", t->tid, sig);
		}
		if (ptrace(PTRACE_CONT, t->tid, 0, 0) < 0)
			return -errno;
		if (ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) < 0)
			return -errno;
	}
	return tracer_get_regs(t->tid, &t->regs);
}

int tracer_get_regs(pid_t tid, struct user_regs_struct *regs)
{
	if (ptrace(PTRACE_GETREGS, tid, 0, regs) < 0)
		return -errno;
	return 0;
}

int tracer_set_regs(pid_t tid, const struct user_regs_struct *regs)
{
	if (ptrace(PTRACE_SETREGS, tid, 0, regs) < 0)
		return -errno;
	return 0;
}

int tracer_get_xstate(pid_t tid, void *buf, uint32_t *len)
{
	struct iovec iov = {.iov_base = buf, .iov_len = *len};
	if (ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &iov) < 0)
		return -errno;
	*len = iov.iov_len;
	return 0;
}

int tracer_set_xstate(pid_t tid, const void *buf, uint32_t len)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	if (ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &iov) < 0)
		return -errno;
	return 0;
}

int tracer_syscall(struct tracee *t, long *ret, long nr, uint64_t a1, uint64_t a2, uint64_t a3,
		   uint64_t a4, uint64_t a5, uint64_t a6)
{
	struct user_regs_struct regs = t->regs;
	uint64_t deadline = t->timeout_ms ? now_us() + t->timeout_ms * 1000ULL : 0;
	int status, r;

	regs.rax = nr;
	/* Not a syscall in progress: keeps the kernel's restart logic off our call. */
	regs.orig_rax = -1;
	regs.rdi = a1;
	regs.rsi = a2;
	regs.rdx = a3;
	regs.r10 = a4;
	regs.r8 = a5;
	regs.r9 = a6;
	regs.rip = t->insn;
	r = tracer_set_regs(t->tid, &regs);
	if (r < 0)
		return r;
	if (ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0) < 0)
		return -errno;
	for (;;) {
		r = tracer_wait_until(t->tid, &status, deadline);
		if (r < 0)
			return r;
		int sig = WSTOPSIG(status), event = status >> 16;
		if (event == PTRACE_EVENT_CLONE) {
			unsigned long child;
			ptrace(PTRACE_GETEVENTMSG, t->tid, 0, &child);
			t->last_clone = child;
		} else if (sig == SIGTRAP && event == 0) {
			break;
		} else if (event == 0 && sig != SIGSTOP) {
			hold_signal(t, sig);
		}
		if (ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0) < 0)
			return -errno;
	}
	r = tracer_get_regs(t->tid, &regs);
	if (r < 0)
		return r;
	*ret = (long)regs.rax;
	return 0;
}

/*
 * The signal a held thread was about to take goes back to it. Only a
 * signal-delivery-stop delivers the signal a restart names; a thread held
 * in the stop PTRACE_INTERRUPT makes (one we made no call in) drops it, and
 * a lost SIGURG leaves a Go thread unpreemptible for good (the runtime
 * sends no other until that one is handled). So the signal is raised again
 * with tkill once the thread runs; after a detach it arrives as it would
 * have, and a thread still traced stops for it and capture_session_on_wait
 * passes it on. A fault the thread caused itself (si_code > 0) is not
 * raised: the instruction faults again when it runs again.
 */
int tracer_resume(struct tracee *t, int detach)
{
	int sig = t->pending_sig;
	int r = tracer_set_regs(t->tid, &t->regs);
	if (r < 0)
		return r;
	if (ptrace(detach ? PTRACE_DETACH : PTRACE_CONT, t->tid, 0, 0) < 0)
		return -errno;
	t->pending_sig = 0;
	if (sig && !t->pending_fault && syscall(SYS_tkill, t->tid, sig) < 0 &&
	    errno != ESRCH)
		return -errno;
	return 0;
}

int tracer_mem_open(pid_t pid, int writable)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int tracer_peek(int memfd, uint64_t addr, void *buf, size_t len)
{
	char *p = buf;
	while (len) {
		ssize_t r = pread(memfd, p, len, addr);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		p += r;
		addr += r;
		len -= r;
	}
	return 0;
}

int tracer_poke(int memfd, uint64_t addr, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t r = pwrite(memfd, p, len, addr);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		p += r;
		addr += r;
		len -= r;
	}
	return 0;
}
