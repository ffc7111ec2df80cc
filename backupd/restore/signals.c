/*
 * signals.c - the process-wide signal dispositions, set back by injected
 * rt_sigaction. All of them are set, defaults too, because a husk inherits
 * ignored signals from whoever started it.
 */
#include <signal.h>
#include <sys/syscall.h>

#include "log.h"
#include "restore.h"
#include "util.h"

int restore_sigactions(struct restore *r)
{
	for (int sig = 1; sig <= IMAGE_NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		const struct image_sigaction *sa = &r->img->sigactions[sig - 1];
		uint64_t p = restore_scratch_put(r, 0, sa, sizeof(*sa));
		long ret = restore_call(r, SYS_rt_sigaction, sig, p, 0, 8);
		if (ret < 0)
			return log_error_errno(ret, "cannot restore the action of signal %d", sig);
	}
	return 0;
}
