/*
 * creds.c - who the process is, so that it comes back as the same user
 * with the same privileges: per thread the uids and gids (real, effective,
 * saved, fs), supplementary groups, the five capability sets, securebits,
 * no_new_privs and seccomp filters; for the process, the dumpable flag.
 *
 * Linux keeps credentials per thread, so each thread's are read on their
 * own. Everything but securebits and the dumpable flag comes from
 * /proc/PID/task/TID/status, which root reads whatever the target's uid:
 * attaching to a service that runs as nobody needs no privilege beyond
 * ptrace. Securebits and dumpable only the task itself can read, by an
 * injected prctl; they are cached with the other injected reads.
 *
 * Seccomp filters are carried: each thread's programs, read with
 * PTRACE_SECCOMP_GET_FILTER while it is stopped, are installed again in
 * the same order at restore. Strict mode (read, write and exit only) is
 * out of a restore's reach and is refused by name.
 *
 * The oldest filters of a thread may be its environment's: those primaryd
 * itself runs under (a container's, such as nspawn's, or a unit's), which
 * a service primaryd starts inherits, as one in the same container does.
 * They are not the service's to carry: the restored process gets its new
 * host's from backupd in the same way. So only the filters past primaryd's
 * own count are carried, and since a confined tracer can read no filter at
 * all, a confined primaryd refuses, by name, a service with filters of its
 * own.
 */
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "capture.h"
#include "log.h"
#include "util.h"

int capture_creds(struct capture *c, struct tracee *t, struct image_thread *it)
{
	int seccomp[2];
	int r = proc_task_creds(c->pid, t->tid, &it->creds, seccomp);

	if (r < 0)
		return log_error_errno(r, "cannot read the credentials of thread %d of pid %d",
				       t->tid, c->pid);
	if (seccomp[0] == 1)
		return log_error_errno(-EOPNOTSUPP,
				       "thread %d of pid %d runs in seccomp strict mode, which a "
				       "restore cannot reproduce; refusing to dump it",
				       t->tid, c->pid);
	if (seccomp[0] != 2)
		return 0;
	if (!c->env_filters_known) {
		c->env_filters = self_seccomp_filters();
		if (c->env_filters < 0)
			return log_error_errno(c->env_filters, "cannot read our own seccomp state");
		c->env_filters_known = true;
	}
	int env = c->env_filters;
	if (seccomp[1] <= env)
		return 0; /* all the environment's: the restored process gets its host's */
	if (env > 0)
		return log_error_errno(-EOPNOTSUPP,
				       "thread %d of pid %d runs under %d seccomp filters of its own "
				       "beyond the %d of our environment, and a confined primaryd "
				       "cannot read them to carry them; refusing to dump it",
				       t->tid, c->pid, seccomp[1] - env, env);
	r = task_seccomp_filters(t->tid, 0, seccomp[1], &it->creds);
	if (r < 0)
		return log_error_errno(r, "cannot read the %d seccomp filters of thread %d of pid %d",
				       seccomp[1], t->tid, c->pid);
	return 0;
}

int capture_securebits_inside(struct capture *c, struct tracee *t, uint32_t *bits)
{
	long ret;

	t->insn = c->leader->insn;
	int r = tracer_call(t, &ret, SYS_prctl, PR_GET_SECUREBITS, 0, 0, 0, 0);
	if (r < 0 || ret < 0)
		return r < 0 ? r : (int)ret;
	*bits = ret;
	return 0;
}

int capture_dumpable(struct capture *c)
{
	struct inject_cache *k = c->cache;
	long ret;

	if (k && c->cache_ok) {
		c->img->dumpable = k->dumpable;
		return 0;
	}
	int r = tracer_call(c->leader, &ret, SYS_prctl, PR_GET_DUMPABLE, 0, 0, 0, 0);
	if (r < 0 || ret < 0)
		return log_error_errno(r < 0 ? r : (int)ret,
				       "cannot read the dumpable flag of pid %d", c->pid);
	c->img->dumpable = ret;
	if (k)
		k->dumpable = ret;
	return 0;
}
