/*
 * signals.c - the process-wide signal dispositions, set back by injected
 * rt_sigaction. All of them are set, defaults too, because a husk inherits
 * ignored signals from whoever started it. Each is read back afterwards
 * (rt_sigaction with no new action succeeds whatever it returns), so a
 * handler that did not come back fails the restore by signal number.
 */
#include <signal.h>
#include <sys/syscall.h>

#include "log.h"
#include "restore.h"
#include "util.h"

#define SIG_BIT(s) (1ULL << ((s) - 1))

static int set_action(struct restore *r, int sig, const struct image_sigaction *sa)
{
	uint64_t p;
	int rc = inject_put(&r->inj, 0, sa, sizeof(*sa), &p);
	if (rc < 0)
		return restore_fail(r, rc, "signal %d: cannot stage its action", sig);
	long ret = restore_call(r, SYS_rt_sigaction, sig, p, 0, 8);
	return ret < 0 ? restore_fail(r, ret, "signal %d: cannot set its action (rt_sigaction)",
				      sig)
		       : 0;
}

/* The kernel never keeps SIGKILL or SIGSTOP in a handler's mask. */
static bool same_action(const struct image_sigaction *want, const struct image_sigaction *got)
{
	uint64_t unblockable = SIG_BIT(SIGKILL) | SIG_BIT(SIGSTOP);
	return want->handler == got->handler && want->flags == got->flags &&
	       want->restorer == got->restorer &&
	       (want->mask & ~unblockable) == (got->mask & ~unblockable);
}

/* One rt_sigaction(sig, NULL, &cur) per signal into the scratch area, then one read. */
static int verify_actions(struct restore *r)
{
	struct image_sigaction got[IMAGE_NSIG];
	const uint64_t base = r->area + AREA_SCRATCH + PAGE_SIZE;

	_Static_assert(sizeof(got) + PAGE_SIZE <= AREA_SCRATCH_LEN, "actions must fit");
	for (int sig = 1; sig <= IMAGE_NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		long ret = restore_call(r, SYS_rt_sigaction, sig, 0,
					base + (sig - 1) * sizeof(got[0]), 8);
		if (ret < 0)
			return restore_fail(r, ret, "signal %d: cannot read its action back "
					    "(rt_sigaction)", sig);
	}
	int rc = inject_get(&r->inj, base, got, sizeof(got));
	if (rc < 0)
		return restore_fail(r, rc, "cannot read the signal actions back");
	for (int sig = 1; sig <= IMAGE_NSIG; sig++) {
		const struct image_sigaction *want = &r->img->sigactions[sig - 1];
		if (sig == SIGKILL || sig == SIGSTOP || same_action(want, &got[sig - 1]))
			continue;
		return restore_fail(r, -EIO, "signal %d: its action did not come back (handler "
				    "%#lx flags %#lx, expected handler %#lx flags %#lx)", sig,
				    (unsigned long)got[sig - 1].handler,
				    (unsigned long)got[sig - 1].flags, (unsigned long)want->handler,
				    (unsigned long)want->flags);
	}
	return 0;
}

int restore_sigactions(struct restore *r)
{
	for (int sig = 1; sig <= IMAGE_NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		int rc = set_action(r, sig, &r->img->sigactions[sig - 1]);
		if (rc < 0)
			return rc;
	}
	return verify_actions(r);
}
