/*
 * threads.c - holding every thread of the target and capturing its state.
 *
 * Threads are seized one by one and the task list re-read until no new one
 * appears: once every known thread is stopped none can clone, so the loop
 * ends. Per thread we keep what the kernel holds for it alone: registers,
 * FPU/XSAVE, signal mask, alternate signal stack, the clear-child-tid
 * address, the robust futex list, the rseq registration and the
 * credentials (creds.c).
 */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include "capture.h"
#include "log.h"
#include "util.h"

/* Linux 5.13; glibc 2.36 names the request but not its result. */
#define CS_PTRACE_GET_RSEQ_CONFIGURATION 0x420f
struct rseq_config {
	uint64_t rseq_abi_pointer;
	uint32_t rseq_abi_size;
	uint32_t signature;
	uint32_t flags;
	uint32_t pad;
};

static bool is_seized(const struct capture *c, pid_t tid)
{
	for (size_t i = 0; i < c->n_threads; i++)
		if (c->threads[i].tid == tid)
			return true;
	return false;
}

/*
 * Interrupt threads [from, c->n_threads) first, then wait for each: they
 * stop in parallel, so the stop costs about one scheduling delay instead
 * of one per thread. Drops those that exited (the leader's exit is an
 * error).
 */
static int stop_from(struct capture *c, size_t from)
{
	size_t kept = from, n = c->n_threads - from;
	_cleanup_free_ int *sent = calloc(n ? n : 1, sizeof(*sent)); /* each interrupt's result */
	int r;

	if (!sent)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		sent[i] = ptrace(PTRACE_INTERRUPT, c->threads[from + i].tid, 0, 0) < 0 ? -errno : 0;
	for (size_t i = 0; i < n; i++) {
		struct tracee t = c->threads[from + i];
		r = sent[i] < 0 ? sent[i] : tracer_wait_stop(&t);
		if (r == -ESRCH && t.tid != c->pid)
			continue;
		if (r < 0)
			return log_error_errno(r, "cannot stop thread %d", t.tid);
		c->threads[kept++] = t;
	}
	c->n_threads = kept;
	return 0;
}

/* Stop the threads we already hold again after a resume; drop those that exited. */
static int restop_known(struct capture *c)
{
	return stop_from(c, 0);
}

static bool traced_by_us(pid_t pid, pid_t tid)
{
	char path[64];
	_cleanup_free_ char *buf = NULL;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", pid, tid);
	if (read_file(path, &buf) < 0)
		return false;
	char *p = strstr(buf, "TracerPid:");
	return p && atoi(p + 10) == getpid();
}

/* Seize and stop every thread not yet held; returns how many were added. */
static int seize_new(struct capture *c)
{
	_cleanup_free_ pid_t *tids = NULL;
	ssize_t n = proc_list_tasks(c->pid, &tids);
	int added = 0;

	if (n < 0)
		return log_error_errno(n == -ENOENT ? -ESRCH : n, "no process with pid %d", c->pid);
	for (ssize_t i = 0; i < n; i++) {
		if (is_seized(c, tids[i]))
			continue;
		int r = tracer_seize(tids[i], c->seize_options);
		if (r == -EPERM && traced_by_us(c->pid, tids[i]))
			r = 0; /* seized before exec by service_spawn() */
		if (r == -ESRCH && tids[i] != c->pid)
			continue; /* the thread exited meanwhile */
		if (r < 0)
			return log_error_errno(r, "cannot seize thread %d of pid %d", tids[i], c->pid);
		struct tracee *t = array_push(&c->threads, &c->n_threads, &c->cap_threads,
					      sizeof(*t));
		if (!t)
			return -ENOMEM;
		*t = (struct tracee){.tid = tids[i]};
		added++;
	}
	size_t before = c->n_threads - added;
	int r = stop_from(c, before);
	return r < 0 ? r : (int)(c->n_threads - before);
}

int capture_stop_all(struct capture *c)
{
	int r;

	c->stop_us = now_us();
	r = restop_known(c);
	if (r < 0)
		return r;
	/* Once every known thread is stopped none can clone, so this ends. */
	while ((r = seize_new(c)) > 0)
		;
	if (r < 0)
		return r;
	c->leader = NULL;
	for (size_t i = 0; i < c->n_threads; i++)
		if (c->threads[i].tid == c->pid)
			c->leader = &c->threads[i];
	if (!c->leader)
		return log_error_errno(-ESRCH, "pid %d has no main thread", c->pid);
	return 0;
}

/*
 * A traced thread stops for every signal sent to it, and waits for us to
 * pass it on: Go sends SIGURG for preemption all the time, so a process
 * held between epochs stalls on our scheduling. Where the process dies with
 * us anyway (PR_SET_PDEATHSIG, set by service_spawn), we let go between
 * stops and seize again at the next one.
 */
int capture_resume_all(struct capture *c)
{
	for (size_t i = 0; i < c->n_threads; i++) {
		int r = tracer_resume(&c->threads[i], c->detach_between);
		if (r < 0 && r != -ESRCH)
			return log_error_errno(r, "cannot resume thread %d", c->threads[i].tid);
	}
	if (c->detach_between)
		c->n_threads = 0;
	c->stopped_us += now_us() - c->stop_us;
	return 0;
}

/*
 * Each thread we interrupt or let go is woken on our CPU (in the pinned
 * layout the service shares it with primaryd), and under the fair
 * scheduler a wakee preempts its waker: the service's threads, the ones
 * not yet stopped or already let go, then ran a slice or more before we
 * got the CPU back, and stopping 8 threads took 0.1-13 ms, letting them go
 * 0.03-7 ms (measured, log of each step). A SCHED_FIFO tracer runs until
 * it waits for a stop. It holds the CPU only while the service is held,
 * which is the time the service waits for us anyway. Without the right
 * (no CAP_SYS_NICE, an RT-less cgroup) it runs as before.
 */
void capture_cpu_hold(struct capture *c)
{
	struct sched_param rt = {.sched_priority = sched_get_priority_min(SCHED_FIFO)};

	if (c->cpu_held || c->cpu_hold_failed)
		return;
	c->sched_policy = sched_getscheduler(0);
	if (c->sched_policy < 0 || sched_getparam(0, &c->sched_param) < 0 ||
	    sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &rt) < 0) {
		log_info("pid %d: stops run at normal priority (cannot use SCHED_FIFO: %m)", c->pid);
		c->cpu_hold_failed = true;
		return;
	}
	c->cpu_held = true;
}

void capture_cpu_release(struct capture *c)
{
	if (!c->cpu_held)
		return;
	c->cpu_held = false;
	if (sched_setscheduler(0, c->sched_policy, &c->sched_param) < 0)
		log_warn("cannot return to scheduling policy %d: %m", c->sched_policy);
}

void capture_release_all(struct capture *c)
{
	for (size_t i = 0; i < c->n_threads; i++) {
		int r = tracer_resume(&c->threads[i], 1);
		if (r < 0 && r != -ESRCH)
			log_warn("cannot release thread %d: %s", c->threads[i].tid, strerror(-r));
	}
	c->resume_us = now_us();
}

/* Ask the kernel, from inside the thread, for what only the thread itself can read. */
static int capture_thread_inside(struct capture *c, struct tracee *t, struct image_thread *it)
{
	struct {
		uint64_t sp;
		int32_t flags, pad;
		uint64_t size;
		uint64_t tid_addr;
	} out;
	long ret;
	int r;

	uint64_t scratch;
	r = capture_scratch_get(c, &scratch);
	if (r < 0)
		return r;
	t->insn = c->leader->insn;
	struct injector in = capture_injector(c);
	ret = inject_call_in(&in, t, SYS_sigaltstack, 0, scratch);
	if (ret >= 0)
		ret = inject_call_in(&in, t, SYS_prctl, PR_GET_TID_ADDRESS, scratch + 24);
	if (ret < 0)
		return log_error_errno((int)ret, "thread %d of pid %d: cannot read its signal stack "
				       "or tid address (sigaltstack, PR_GET_TID_ADDRESS)", t->tid,
				       c->pid);
	r = tracer_peek(c->memfd, scratch, &out, sizeof(out));
	if (r < 0)
		return r;
	it->ss_sp = out.sp;
	it->ss_flags = out.flags;
	it->ss_size = out.size;
	it->clear_tid_addr = out.tid_addr;
	return capture_securebits_inside(c, t, &it->creds.securebits);
}

static struct thread_cache *cached_thread(struct capture *c, pid_t tid)
{
	struct inject_cache *k = c->cache;
	for (size_t i = 0; k && i < k->n_threads; i++)
		if (k->threads[i].tid == tid)
			return &k->threads[i];
	return NULL;
}

/* The alternate stack and tid address, from the cache when it may be trusted. */
static int thread_inside_cached(struct capture *c, struct tracee *t, struct image_thread *it)
{
	struct thread_cache *tc = cached_thread(c, t->tid);
	if (tc && c->cache_ok) {
		it->ss_sp = tc->ss_sp;
		it->ss_size = tc->ss_size;
		it->ss_flags = tc->ss_flags;
		it->clear_tid_addr = tc->tid_addr;
		it->creds.securebits = tc->securebits;
		return 0;
	}
	int r = capture_thread_inside(c, t, it);
	if (r < 0 || !c->cache)
		return r;
	if (!tc) {
		tc = array_push(&c->cache->threads, &c->cache->n_threads, &c->cache->cap_threads,
				sizeof(*tc));
		if (!tc)
			return -ENOMEM;
	}
	*tc = (struct thread_cache){.tid = t->tid,
				    .ss_sp = it->ss_sp,
				    .ss_size = it->ss_size,
				    .tid_addr = it->clear_tid_addr,
				    .ss_flags = it->ss_flags & ~SS_ONSTACK,
				    .securebits = it->creds.securebits};
	return 0;
}

/* The parts of a thread read from /proc and ptrace that thread_cache keeps. */
static int thread_own_state(struct capture *c, struct tracee *t, struct image_thread *it)
{
	struct rseq_config rseq = {0};
	char path[96];

	if (ptrace(CS_PTRACE_GET_RSEQ_CONFIGURATION, t->tid, sizeof(rseq), &rseq) > 0) {
		it->rseq_addr = rseq.rseq_abi_pointer;
		it->rseq_len = rseq.rseq_abi_size;
		it->rseq_sig = rseq.signature;
	}
	if (syscall(SYS_get_robust_list, t->tid, &it->robust_head, &it->robust_len) < 0)
		return log_error_errno(-errno, "cannot read robust futex list of thread %d", t->tid);

	snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", c->pid, t->tid);
	_cleanup_free_ char *comm = NULL;
	if (read_file(path, &comm) > 0) {
		comm[strcspn(comm, "\n")] = 0;
		snprintf(it->comm, sizeof(it->comm), "%s", comm);
	}
	return capture_creds(c, t, it);
}

static int thread_own_state_from(const struct thread_cache *tc, struct image_thread *it)
{
	uint32_t securebits = it->creds.securebits;

	it->creds = tc->creds;
	it->creds.securebits = securebits;
	it->creds.groups = NULL;
	if (tc->creds.n_groups) {
		it->creds.groups = malloc(tc->creds.n_groups * sizeof(*it->creds.groups));
		if (!it->creds.groups)
			return -ENOMEM;
		memcpy(it->creds.groups, tc->groups, tc->creds.n_groups * sizeof(*tc->groups));
	}
	memcpy(it->comm, tc->comm, sizeof(it->comm));
	it->robust_head = tc->robust_head;
	it->robust_len = tc->robust_len;
	it->rseq_addr = tc->rseq_addr;
	it->rseq_len = tc->rseq_len;
	it->rseq_sig = tc->rseq_sig;
	return 0;
}

static void thread_own_state_keep(struct thread_cache *tc, const struct image_thread *it)
{
	if (it->creds.n_filters || it->creds.n_groups > CACHE_GROUPS)
		return; /* rare: read each time */
	tc->creds = it->creds;
	tc->creds.groups = NULL;
	if (it->creds.n_groups)
		memcpy(tc->groups, it->creds.groups, it->creds.n_groups * sizeof(*tc->groups));
	memcpy(tc->comm, it->comm, sizeof(tc->comm));
	tc->robust_head = it->robust_head;
	tc->robust_len = it->robust_len;
	tc->rseq_addr = it->rseq_addr;
	tc->rseq_len = it->rseq_len;
	tc->rseq_sig = it->rseq_sig;
	tc->creds_kept = true;
}

static int capture_thread(struct capture *c, struct tracee *t, struct image_thread *it,
			  bool leader_same)
{
	uint8_t xbuf[IMAGE_XSTATE_MAX];
	uint32_t xlen = sizeof(xbuf);
	int r;

	it->tid = t->tid;
	it->regs = t->regs;
	r = tracer_get_xstate(t->tid, xbuf, &xlen);
	if (r < 0)
		return log_error_errno(r, "cannot read FPU state of thread %d", t->tid);
	it->xstate = malloc(xlen);
	if (!it->xstate)
		return -ENOMEM;
	memcpy(it->xstate, xbuf, xlen);
	it->xstate_len = xlen;

	if (ptrace(PTRACE_GETSIGMASK, t->tid, sizeof(it->sigmask), &it->sigmask) < 0)
		return log_error_errno(-errno, "cannot read signal mask of thread %d", t->tid);
	struct thread_cache *tc = cached_thread(c, t->tid);
	bool kept = leader_same && c->cache_ok && tc && tc->creds_kept;
	r = kept ? thread_own_state_from(tc, it) : thread_own_state(c, t, it);
	if (r < 0)
		return r;
	if (kept)
		c->stats.threads_kept++;
	else
		c->stats.threads_read++;
	r = thread_inside_cached(c, t, it);
	if (r < 0)
		return log_error_errno(r, "cannot read signal stack or securebits of thread %d",
				       t->tid);
	tc = cached_thread(c, t->tid); /* thread_inside_cached() may have made it or reset it */
	if (tc && !kept)
		thread_own_state_keep(tc, it);
	return 0;
}

/* Forget cached threads that are gone, so a recycled thread id is read afresh. */
static void prune_cache(struct capture *c)
{
	struct inject_cache *k = c->cache;
	size_t kept = 0;
	for (size_t i = 0; k && i < k->n_threads; i++)
		if (is_seized(c, k->threads[i].tid))
			k->threads[kept++] = k->threads[i];
	if (k)
		k->n_threads = kept;
}

static bool creds_equal(const struct image_creds *a, const uint32_t *ga,
			const struct image_creds *b, const uint32_t *gb)
{
	return a->uid == b->uid && a->euid == b->euid && a->suid == b->suid &&
	       a->fsuid == b->fsuid && a->gid == b->gid && a->egid == b->egid &&
	       a->sgid == b->sgid && a->fsgid == b->fsgid && a->cap_inh == b->cap_inh &&
	       a->cap_prm == b->cap_prm && a->cap_eff == b->cap_eff && a->cap_bnd == b->cap_bnd &&
	       a->cap_amb == b->cap_amb && a->no_new_privs == b->no_new_privs &&
	       a->n_groups == b->n_groups &&
	       (!a->n_groups || memcmp(ga, gb, a->n_groups * sizeof(*ga)) == 0);
}

/*
 * Have the main thread's credentials stayed as the last stop read them?
 * Go changes credentials on every thread at once (setuid(), setgroups()
 * and the like run on all threads: AllThreadsSyscall), so one read of the
 * main thread's status stands for all of them; a change on a single thread
 * by a raw syscall is read at the next refresh of the cache. Each
 * thread's status and comm cost 15-25 us to read, 0.2 ms a stop of the
 * paper's workload (measured, rdtsc, loaded machine).
 */
static bool leader_creds_same(struct capture *c)
{
	struct inject_cache *k = c->cache;
	struct image_creds now = {0};
	int seccomp[2];
	bool same = false;

	if (!k || proc_task_creds(c->pid, c->pid, &now, seccomp) < 0) {
		free(now.groups);
		if (k)
			k->leader.known = false;
		return false;
	}
	struct creds_sign *s = &k->leader;
	same = s->known && creds_equal(&now, now.groups, &s->creds, s->groups) &&
	       seccomp[0] == s->seccomp[0] && seccomp[1] == s->seccomp[1];
	s->known = now.n_groups <= CACHE_GROUPS;
	if (s->known) {
		s->creds = now;
		s->creds.groups = NULL;
		if (now.n_groups)
			memcpy(s->groups, now.groups, now.n_groups * sizeof(*s->groups));
		s->seccomp[0] = seccomp[0];
		s->seccomp[1] = seccomp[1];
	}
	free(now.groups);
	return same;
}

int capture_threads(struct capture *c)
{
	struct image *img = c->img;
	bool leader_same = leader_creds_same(c);

	prune_cache(c);
	/* The leader first: restore recreates the others from it. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < c->n_threads; i++) {
			struct tracee *t = &c->threads[i];
			if ((t == c->leader) != (pass == 0))
				continue;
			struct image_thread *it = array_push(&img->threads, &img->n_threads,
							     &img->cap_threads, sizeof(*it));
			if (!it)
				return -ENOMEM;
			int r = capture_thread(c, t, it, leader_same);
			if (r < 0)
				return r;
		}
	return 0;
}
