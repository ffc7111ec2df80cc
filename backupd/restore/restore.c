/*
 * restore.c - `checksync-backupd restore`: drive the rebuild of a process.
 *
 * The husk is forked with clone3(set_tid) so it gets the old pid where that
 * pid is free, then execs the image's executable under PTRACE_TRACEME and
 * stops before its first instruction. Everything after that happens by
 * injected system calls from a small area we map into it: one `syscall`
 * instruction, a scratch page for arguments, a stack for new threads.
 * PTRACE_O_EXITKILL means a restore that fails half way leaves nothing
 * running.
 */
#include <linux/sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "restore.h"
#include "util.h"

uint64_t restore_scratch_put(struct restore *r, size_t off, const void *p, size_t len)
{
	if (off + len > AREA_SCRATCH_LEN)
		return 0;
	uint64_t a = r->area + AREA_SCRATCH + off;
	return tracer_poke(r->memfd, a, p, len) < 0 ? 0 : a;
}

long restore_leader_call(struct restore *r, long nr, uint64_t a1, uint64_t a2, uint64_t a3,
			 uint64_t a4, uint64_t a5, uint64_t a6)
{
	long ret;
	int rc = tracer_syscall(&r->threads[0], &ret, nr, a1, a2, a3, a4, a5, a6);
	return rc < 0 ? rc : ret;
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

static int husk_start(struct restore *r)
{
	const char *exe = r->img->exe;
	int status;

	pid_t pid = husk_fork(r->img->pid);
	if (pid < 0)
		return log_error_errno(-errno, "cannot fork");
	if (pid == 0) {
		char *argv[] = {(char *)exe, NULL}, *envp[] = {NULL};
		setsid();
		if (restore_timens_enter(&r->timens) < 0) /* entered at exec */
			_exit(126);
		if (ptrace(PTRACE_TRACEME, 0, 0, 0) < 0)
			_exit(127);
		execve(exe, argv, envp);
		_exit(127);
	}
	r->pid = pid;
	r->same_tids = pid == r->img->pid;
	r->threads[0].tid = pid;
	if (waitpid(pid, &status, __WALL) < 0 || !WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
		return log_error_errno(-ECHILD, "%s did not start under ptrace", exe);
	if (ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL) < 0)
		return log_error_errno(-errno, "cannot set ptrace options on the husk");
	return tracer_get_regs(pid, &r->threads[0].regs);
}

/* Map our working area into the husk, using a syscall instruction planted at its entry point. */
static int husk_map_area(struct restore *r)
{
	static const uint8_t code[] = {0x0f, 0x05, 0xcc}; /* syscall; int3 */
	struct tracee *leader = &r->threads[0];
	long ret;

	ssize_t n = proc_read_maps(r->pid, &r->husk_vmas);
	if (n < 0)
		return log_error_errno(n, "cannot read the husk's mappings");
	r->n_husk_vmas = n;
	r->memfd = tracer_mem_open(r->pid, 1);
	if (r->memfd < 0)
		return log_error_errno(r->memfd, "cannot open the husk's memory");
	uint64_t area = restore_find_free_area(r, AREA_LEN);
	if (!area)
		return log_error_errno(-ENOMEM, "no free address range for the restorer area");

	/* The husk's own code is about to be unmapped, so borrowing its first bytes is harmless. */
	leader->insn = leader->regs.rip;
	int rc = tracer_poke(r->memfd, leader->insn, code, 2);
	if (rc < 0)
		return log_error_errno(rc, "cannot write into the husk");
	rc = tracer_call(leader, &ret, SYS_mmap, area, AREA_LEN, PROT_READ | PROT_WRITE | PROT_EXEC,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (rc < 0 || (uint64_t)ret != area)
		return log_error_errno(rc < 0 ? rc : -ENOMEM, "cannot map the restorer area");
	r->area = area;
	leader->insn = area + AREA_CODE;
	return tracer_poke(r->memfd, leader->insn, code, sizeof(code));
}

/* Last call in the leader: take our area away again. */
static int husk_unmap_area(struct restore *r)
{
	long ret = restore_call(r, SYS_munmap, r->area, AREA_LEN);
	return ret < 0 ? log_error_errno(ret, "cannot unmap the restorer area") : 0;
}

static int release_all(struct restore *r)
{
	for (size_t i = 0; i < r->n_threads; i++) {
		struct tracee *t = &r->threads[i];
		if (ptrace(PTRACE_DETACH, t->tid, 0, 0) < 0)
			return log_error_errno(-errno, "cannot release thread %d", t->tid);
	}
	return 0;
}

/*
 * A failed restore leaves nothing running. The threads we cloned are traced
 * by us, so each must be reaped by its own tid before the leader's exit can
 * be reported: waiting for the leader alone would wait forever.
 */
static void husk_kill(struct restore *r)
{
	kill(r->pid, SIGKILL);
	for (size_t i = 1; i < r->n_threads; i++)
		waitpid(r->threads[i].tid, NULL, __WALL);
	waitpid(r->pid, NULL, __WALL);
}

static int restore_steps(struct restore *r)
{
	int rc = restore_timens_plan(r->img, &r->timens);
	if (rc >= 0)
		rc = husk_start(r);
	if (rc >= 0)
		rc = restore_rlimits(r);
	if (rc >= 0)
		rc = husk_map_area(r);
	if (rc >= 0)
		rc = restore_mem(r);
	if (rc >= 0)
		rc = restore_fds(r);
	if (rc >= 0)
		rc = restore_sigactions(r);
	if (rc >= 0)
		rc = restore_misc(r);
	if (rc >= 0)
		rc = restore_threads(r);
	if (rc >= 0)
		rc = restore_patch_tids(r);
	if (rc >= 0)
		rc = restore_creds(r); /* after everything that needs root */
	if (rc >= 0)
		rc = husk_unmap_area(r);
	if (rc >= 0)
		rc = restore_threads_finish(r);
	return rc;
}

int restore_image_mem_opts(const struct image *img, const struct restore_opts *opts,
			   pid_t *pid_out)
{
	static const struct restore_opts defaults = {0};
	char err[512];
	int rc = restore_check_files(img, err, sizeof(err));
	if (rc < 0) {
		log_error("%s", err);
		return rc;
	}

	struct restore r = {.img = img, .opts = opts ? opts : &defaults, .memfd = -1, .n_threads = 1};
	r.threads = calloc(img->n_threads, sizeof(*r.threads));
	if (!r.threads)
		return -ENOMEM;
	rc = restore_steps(&r);
	if (rc >= 0)
		rc = release_all(&r);
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
