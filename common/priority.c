/*
 * priority.c - see priority.h.
 */
#include "priority.h"

#include <errno.h>
#include <sched.h>
#include <sys/resource.h>

int priority_run_ahead(int steps, int *nice)
{
	struct sched_param sp = {0};
	int was;

	errno = 0;
	was = getpriority(PRIO_PROCESS, 0);
	if (errno)
		return -errno;
	*nice = was - steps;
	if (sched_setscheduler(0, SCHED_OTHER | SCHED_RESET_ON_FORK, &sp) < 0 ||
	    setpriority(PRIO_PROCESS, 0, *nice) < 0)
		return -errno;
	return 0;
}
