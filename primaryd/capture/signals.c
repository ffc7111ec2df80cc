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

int capture_sigactions(struct capture *c)
{
	struct image_sigaction sa[IMAGE_NSIG];
	long ret;
	int r;

	_Static_assert(sizeof(sa) <= PAGE_SIZE, "sigactions must fit the scratch page");
	for (int sig = 1; sig <= IMAGE_NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		uint64_t dst = c->scratch + (sig - 1) * sizeof(struct image_sigaction);
		r = tracer_call(c->leader, &ret, SYS_rt_sigaction, sig, 0, dst, 8);
		if (r < 0)
			return log_error_errno(r, "cannot inject rt_sigaction");
		if (ret < 0)
			return log_error_errno((int)ret, "rt_sigaction(%d) in pid %d failed", sig,
					       c->pid);
	}
	r = tracer_peek(c->memfd, c->scratch, sa, sizeof(sa));
	if (r < 0)
		return r;
	for (int sig = 1; sig <= IMAGE_NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			c->img->sigactions[sig - 1] = sa[sig - 1];
	return 0;
}
