/*
 * restore.c - `checksync-backupd restore`: drive the rebuild of a process.
 *
 * The husk is forked with clone3(set_tid) so it gets the old pid where that
 * pid is free, then execs the image's executable under PTRACE_TRACEME and
 * stops before its first instruction. Everything after that happens by
 * injected system calls from a small area we map into it: one `syscall`
 * instruction, a scratch page for arguments, a stack for new threads.
 * PTRACE_O_EXITKILL means a restore that fails half way leaves nothing
 * running. Before that is set, from fork until the area is mapped, the
 * husk has PR_SET_PDEATHSIG instead, and it execs only on a go-ahead byte:
 * a husk whose restorer was killed (with backupd, say) while it waited for
 * the hooks would go on alone and run the service afresh, on its port.
 */
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "restore.h"
#include "util.h"

int restore_fail(struct restore *r, int rc, const char *fmt, ...)
{
	char what[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return log_error_errno(rc, "restore step %s: %s%s", r->inj.step, what,
			       rc == -ECANCELED && r->inj.fault.n ? " (fault point)" : "");
}

static pid_t husk_fork(pid_t want)
{
	struct clone_args args = {
		.exit_signal = SIGCHLD,
		.set_tid = (uintptr_t)&want,
		.set_tid_size = 1,
	};
	pid_t pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0 && (errno == EEXIST || errno == EPERM || errno == EINVAL)) {
		log_info("pid %d is taken here, restoring under a new pid", want);
		pid = fork();
	}
	return pid;
}

/*
 * In the husk: wait until the restorer's husk_forked hook is done (EOF on
 * our end of the pair), take the output, and say how that went (an errno,
 * 0 for fine): the restorer logs it, in its own unit rather than the husk's.
 */
static void husk_await_hooks(const struct restore *r, int hold[2])
{
	char c;
	int err = 0;
	ssize_t n;

	close(hold[1]);
	while ((n = read(hold[0], &c, 1)) < 0 && errno == EINTR)
		;
	if (n != 1) /* EOF without the go-ahead: the restorer is gone, or gave up on us */
		_exit(1);
	if (r->output_fd >= 0)
		err = restore_output_open(r);
	/* should this fail, the restorer hears nothing and says that the husk did not say */
	(void)!write(hold[0], &err, sizeof(err));
	close(hold[0]);
}

/*
 * In the restorer: the hook that places the husk, which waits on hold
 * meanwhile. A fault point of its own (step "hooks"): with :hang the hook
 * never ends, as a systemd that does not answer, for our deadline to end.
 */
static int husk_run_hooks(struct restore *r, pid_t pid, int hold[2])
{
	const struct restore_hooks *hooks = r->opts->hooks;

	close(hold[0]);
	inject_step(&r->inj, "hooks");
	int rc = inject_fault(&r->inj);
	while (rc < 0 && r->inj.fault.hang)
		pause();
	if (rc >= 0 && hooks->husk_forked)
		hooks->husk_forked(pid, hooks->arg);
	if (rc >= 0 && write(hold[1], "g", 1) != 1) /* the husk goes on */
		rc = -errno;
	shutdown(hold[1], SHUT_WR);
	if (rc < 0)
		rc = restore_fail(r, rc, "the hooks of husk %d", pid);
	inject_step(&r->inj, "husk");
	return rc;
}

/* Once the husk has exec'd (its end closed): whether it took the output. */
static void husk_hooks_said(struct restore *r, int fd)
{
	int err = 0;
	ssize_t n = read(fd, &err, sizeof(err));

	close(fd);
	if (r->output_fd < 0 || (n == sizeof(err) && err >= 0))
		return;
	log_info("%s cannot be opened for the restored service (%s): its standard output and "
		 "error go to /dev/null",
		 r->opts->hooks->output_name,
		 n == sizeof(err) ? strerror(-err) : "the husk did not say");
	r->output_fd = -1;
}

/*
 * Whether every thread id of the image but the leader's is free here: one
 * taken by another process (on a small pid namespace, our own restorer)
 * would fail clone3(set_tid), so then every thread gets a new id.
 */
static bool thread_ids_free(const struct image *img)
{
	for (size_t i = 0; i < img->n_threads; i++) {
		pid_t tid = img->threads[i].tid;
		if (tid != img->pid && (kill(tid, 0) == 0 || errno != ESRCH))
			return false;
	}
	return true;
}

static int husk_start(struct restore *r)
{
	const char *exe = r->img->exe;
	int rc, status, hold[2] = {-1, -1};

	r->output_fd = restore_output_fd_plan(r);
	if (r->opts->hooks && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, hold) < 0)
		return restore_fail(r, -errno, "cannot make the husk's socket pair (socketpair)");
	pid_t restorer = getpid(), pid = husk_fork(r->img->pid);
	if (pid < 0) {
		rc = -errno;
		if (hold[0] >= 0) {
			close(hold[0]);
			close(hold[1]);
		}
		return restore_fail(r, rc, "cannot fork the husk for %s", exe);
	}
	if (pid == 0) {
		char *argv[] = {(char *)exe, NULL}, *envp[] = {NULL};
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL); /* each thread's own mask comes last */
		/* Until PTRACE_O_EXITKILL holds us (husk_map_area ends this), die with the restorer. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != restorer)
			_exit(1);
		setsid();
		if (r->opts->hooks)
			husk_await_hooks(r, hold);
		if (restore_timens_enter(&r->timens) < 0) /* entered at exec */
			_exit(126);
		if (ptrace(PTRACE_TRACEME, 0, 0, 0) < 0)
			_exit(127);
		execve(exe, argv, envp);
		_exit(127);
	}
	r->pid = pid;
	r->same_tids = pid == r->img->pid && thread_ids_free(r->img);
	if (pid == r->img->pid && !r->same_tids)
		log_info("a thread id of pid %d is taken here, its threads get new ids", pid);
	if (r->report_fd >= 0)
		dprintf(r->report_fd, "husk %d\n", pid);
	r->threads[0].tid = pid;
	if (r->opts->hooks && (rc = husk_run_hooks(r, pid, hold)) < 0) {
		close(hold[1]);
		return rc;
	}
	rc = tracer_wait_until(pid, &status, now_us() + RESTORE_CALL_TIMEOUT_MS * 1000ULL);
	if (rc < 0 || !WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP) {
		if (hold[1] >= 0)
			close(hold[1]);
		return restore_fail(r, rc < 0 ? rc : -ECHILD, "%s did not start under ptrace", exe);
	}
	if (hold[1] >= 0)
		husk_hooks_said(r, hold[1]);
	rc = inject_fault(&r->inj);
	if (rc >= 0 && ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL) < 0)
		rc = -errno;
	if (rc >= 0)
		rc = tracer_get_regs(pid, &r->threads[0].regs);
	return rc < 0 ? restore_fail(r, rc, "cannot set ptrace options on husk %d", pid) : 0;
}

/* Map our working area into the husk, using a syscall instruction planted at its entry point. */
static int husk_map_area(struct restore *r)
{
	static const uint8_t code[] = {0x0f, 0x05, 0xcc}; /* syscall; int3 */
	struct tracee *leader = &r->threads[0];

	ssize_t n = proc_read_maps(r->pid, &r->husk_vmas);
	if (n < 0)
		return restore_fail(r, n, "cannot read the mappings of husk %d", r->pid);
	r->n_husk_vmas = n;
	r->memfd = tracer_mem_open(r->pid, 1);
	if (r->memfd < 0)
		return restore_fail(r, r->memfd, "cannot open the memory of husk %d", r->pid);
	r->inj.memfd = r->memfd;
	uint64_t area = restore_find_free_area(r, AREA_LEN);
	if (!area)
		return restore_fail(r, -ENOMEM, "no free address range for the restorer area");

	/* The husk's own code is about to be unmapped, so borrowing its first bytes is harmless. */
	leader->insn = leader->regs.rip;
	int rc = tracer_poke(r->memfd, leader->insn, code, 2);
	if (rc < 0)
		return restore_fail(r, rc, "cannot write a syscall instruction at %#lx",
				    (unsigned long)leader->insn);
	long ret = restore_call(r, SYS_mmap, area, AREA_LEN, PROT_READ | PROT_WRITE | PROT_EXEC,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (ret < 0 && ret > -4096)
		return restore_fail(r, ret, "cannot map the restorer area at %#lx (mmap)",
				    (unsigned long)area);
	if ((uint64_t)ret != area)
		return restore_fail(r, -ENOMEM, "the restorer area landed at %#lx, not %#lx",
				    (unsigned long)ret, (unsigned long)area);
	r->area = area;
	r->inj.scratch = area + AREA_SCRATCH;
	r->inj.scratch_len = AREA_SCRATCH_LEN;
	leader->insn = area + AREA_CODE;
	rc = tracer_poke(r->memfd, leader->insn, code, sizeof(code));
	if (rc < 0)
		return restore_fail(r, rc, "cannot write the restorer code at %#lx",
				    (unsigned long)leader->insn);
	/* EXITKILL holds the husk now; the service must outlive its restorer (husk_start). */
	ret = restore_call(r, SYS_prctl, PR_SET_PDEATHSIG, 0);
	return ret < 0 ? restore_fail(r, ret, "cannot clear the husk's parent-death signal "
				      "(prctl) in the restorer area at %#lx", (unsigned long)area)
		       : 0;
}

/* Last call in the leader: take our area away again. */
static int husk_unmap_area(struct restore *r)
{
	long ret = restore_call(r, SYS_munmap, r->area, AREA_LEN);
	return ret < 0 ? restore_fail(r, ret, "cannot unmap the restorer area at %#lx (munmap)",
				      (unsigned long)r->area)
		       : 0;
}

static int release_all(struct restore *r)
{
	for (size_t i = 0; i < r->n_threads; i++) {
		struct tracee *t = &r->threads[i];
		int rc = inject_fault(&r->inj);
		if (rc >= 0 && ptrace(PTRACE_DETACH, t->tid, 0, 0) < 0)
			rc = -errno;
		if (rc < 0)
			return restore_fail(r, rc, "cannot release thread %d", t->tid);
	}
	return 0;
}

/* The caller may want to record the pid before the process can run on its own. */
static int await_go(struct restore *r)
{
	char go;
	ssize_t n;

	if (r->report_fd < 0 || r->go_fd < 0)
		return 0;
	int rc = inject_fault(&r->inj);
	if (rc >= 0 && dprintf(r->report_fd, "ready %d\n", r->pid) < 0)
		rc = -errno;
	while (rc >= 0 && (n = read(r->go_fd, &go, 1)) != 1)
		if (n == 0 || errno != EINTR)
			rc = n == 0 ? -ECONNABORTED : -errno;
	return rc < 0 ? restore_fail(r, rc, "no go-ahead to release pid %d", r->pid) : 0;
}

static int plan_timens(struct restore *r)
{
	return restore_timens_plan(r->img, &r->timens);
}

/* In order; each logs its own error, naming itself (restore_fail) and the resource. */
static const struct {
	const char *name;
	int (*run)(struct restore *r);
} steps[] = {
	{"timens", plan_timens},
	{"husk", husk_start},
	{"rlimits", restore_rlimits},
	{"area", husk_map_area},
	{"mem", restore_mem},
	{"fds", restore_fds},
	{"signals", restore_sigactions},
	{"misc", restore_misc},
	{"threads", restore_threads},
	{"gopatch", restore_patch_tids},
	{"creds", restore_creds}, /* after everything that needs root */
	{"unmap-area", husk_unmap_area},
	{"registers", restore_threads_finish},
	{"ready", await_go},
	{"release", release_all},
};

static int restore_steps(struct restore *r)
{
	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		inject_step(&r->inj, steps[i].name);
		int rc = steps[i].run(r);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/*
 * A failed restore leaves nothing: SIGKILL takes every thread; the traced
 * ones stay zombies until we reap them, and the leader only after them.
 */
static void husk_kill(struct restore *r)
{
	kill(r->pid, SIGKILL);
	for (size_t i = r->n_threads; i-- > 0;)
		while (waitpid(r->threads[i].tid, NULL, __WALL) < 0 && errno == EINTR)
			;
}

int restore_image_mem_opts(const struct image *img, const struct restore_opts *opts,
			   pid_t *pid_out)
{
	return restore_image_mem_report(img, opts, -1, -1, pid_out);
}

int restore_image_mem_report(const struct image *img, const struct restore_opts *opts,
			     int report_fd, int go_fd, pid_t *pid_out)
{
	static const struct restore_opts defaults = {0};
	char err[512];
	int rc = restore_check_files(img, opts ? opts->known : NULL, err, sizeof(err));
	if (rc < 0) {
		log_error("restore step files: %s", err);
		return rc;
	}

	struct restore r = {.img = img, .opts = opts ? opts : &defaults, .memfd = -1, .n_threads = 1,
			    .report_fd = report_fd, .go_fd = go_fd,
			    .inj = {.memfd = -1, .timeout_ms = RESTORE_CALL_TIMEOUT_MS, .step = "start"}};
	if (inject_read_fault(&r.inj.fault, "restore") < 0)
		log_warn("CHECKSYNC_FAULT=%s is not restore-STEP:N[:hang]; ignored",
			 getenv("CHECKSYNC_FAULT"));
	r.threads = calloc(img->n_threads ? img->n_threads : 1, sizeof(*r.threads));
	if (!r.threads)
		return restore_fail(&r, -ENOMEM, "no memory for %zu threads", img->n_threads);
	r.inj.t = &r.threads[0];
	r.output_fd = -1;
	rc = restore_steps(&r);
	if (rc < 0 && r.pid > 0)
		husk_kill(&r);
	if (r.memfd >= 0)
		close(r.memfd);
	free(r.husk_vmas);
	free(r.threads);
	if (rc >= 0)
		*pid_out = r.pid;
	return rc;
}

int restore_image_mem(const struct image *img, pid_t *pid_out)
{
	return restore_image_mem_opts(img, NULL, pid_out);
}

int restore_image_opts(const char *dir, const struct restore_opts *opts, pid_t *pid_out)
{
	_cleanup_image_ struct image *img = NULL;
	char err[512];

	int rc = image_read(dir, &img, err, sizeof(err));
	if (rc < 0) {
		log_error("%s", err);
		return rc;
	}
	return restore_image_mem_opts(img, opts, pid_out);
}

int restore_image(const char *dir, pid_t *pid_out)
{
	return restore_image_opts(dir, NULL, pid_out);
}
