/*
 * signals.c - the process-wide signal dispositions.
 *
 * The kernel shows handlers to no one but the process, so each is read by
 * an injected rt_sigaction(sig, NULL, &old) into the scratch page. Per-thread
 * masks and alternate stacks belong to threads.c.
 */
#include <signal.h>
#include <sys/syscall.h>

#include "capture.h"
#include "log.h"
#include "util.h"

/* Caught and ignored signals as /proc shows them: the cheap sign that handlers changed. */
int capture_signal_masks(struct capture *c, uint64_t masks[2])
{
	static const char *const keys[] = {"SigCgt", "SigIgn"};
	return proc_status_fields(c->pid, keys, 2, 16, masks);
}

int capture_sigactions(struct capture *c)
{
	struct image_sigaction sa[IMAGE_NSIG];
	struct inject_cache *k = c->cache;
	uint64_t scratch;
	int r;

	if (k && c->cache_ok) {
		memcpy(c->img->sigactions, k->sigactions, sizeof(sa));
		return 0;
	}
	r = capture_scratch_get(c, &scratch);
	if (r < 0)
		return r;
	_Static_assert(sizeof(sa) <= PAGE_SIZE, "sigactions must fit the scratch page");
	for (int sig = 1; sig <= IMAGE_NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		uint64_t dst = scratch + (sig - 1) * sizeof(struct image_sigaction);
		struct injector in = capture_injector(c);
		long ret = inject_call(&in, SYS_rt_sigaction, sig, 0, dst, 8);
		if (ret < 0)
			return log_error_errno((int)ret, "signal %d of pid %d: cannot read its action "
					       "(rt_sigaction)", sig, c->pid);
	}
	r = tracer_peek(c->memfd, scratch, sa, sizeof(sa));
	if (r < 0)
		return r;
	for (int sig = 1; sig <= IMAGE_NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			c->img->sigactions[sig - 1] = sa[sig - 1];
	if (k) {
		uint64_t masks[2] = {0, 0};
		memcpy(k->sigactions, c->img->sigactions, sizeof(sa));
		capture_signal_masks(c, masks);
		k->sig_caught = masks[0];
		k->sig_ignored = masks[1];
	}
	return 0;
}
