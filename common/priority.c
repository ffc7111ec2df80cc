/*
 * priority.c - see priority.h.
 */
#include "priority.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>

#include "log.h"

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

void priority_say(int r, int nice, int steps, const char *risk)
{
	if (r < 0)
		log_warn("cannot run ahead of the services (nice %d): %s; %s", nice, strerror(-r), risk);
	else
		log_info("running at nice %d, %d steps ahead of the services", nice, steps);
}
