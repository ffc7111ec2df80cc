/*
 * loopwatch.c - see loopwatch.h.
 */
#include "loopwatch.h"

#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "status.h"
#include "util.h"

/* This thread's time waiting for a CPU while runnable (schedstat's second field), or 0. */
static uint64_t runq_wait_us(int fd)
{
	char buf[96];
	unsigned long long run, wait;
	ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;

	if (n <= 0)
		return 0;
	buf[n] = 0;
	return sscanf(buf, "%llu %llu", &run, &wait) == 2 ? wait / 1000 : 0;
}

static const struct timeval tick = {0, LOOPWATCH_TICK_US};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loopwatch *w = arg;
	uint64_t now = now_us(), cpu = thread_cpu_us(), wait = runq_wait_us(w->schedstat_fd);
	uint64_t late = now > w->due_us ? now - w->due_us : 0;
	(void)fd, (void)what;

	hist_add_us(&w->late, late);
	/* Longer than this and a peer's heartbeats went unanswered: worth a line, with its cause. */
	uint64_t gap = late + LOOPWATCH_TICK_US, ran = cpu - w->cpu_us, waited = wait - w->wait_us;
	if (late >= LOOPWATCH_SAY_US)
		log_info("our loop ran nothing else for %lu ms: %lu ms on a CPU, %lu ms waiting for "
			 "one, %lu ms blocked in a call",
			 (unsigned long)(late / 1000), (unsigned long)(ran / 1000),
			 (unsigned long)(waited / 1000),
			 (unsigned long)(gap > ran + waited ? (gap - ran - waited) / 1000 : 0));
	if (late > w->max_us) {
		w->max_us = late;
		/* Over the whole gap: the tick's own work is noise beside a held loop. */
		w->max_cpu_us = ran;
		w->max_wait_us = waited;
		w->max_at_us = now;
	}
	w->due_us = now + LOOPWATCH_TICK_US;
	w->cpu_us = cpu;
	w->wait_us = wait;
	evtimer_add(w->ev, &tick);
}

void loopwatch_note(const char *who, const char *what, uint64_t since_us)
{
	uint64_t took = now_us() - since_us;
	if (took >= LOOPWATCH_SAY_US)
		log_info("%s: %s held the loop for %lu ms", who, what, (unsigned long)(took / 1000));
}

int loopwatch_start(struct loopwatch *w, struct event_base *base)
{
	*w = (struct loopwatch){0};
	/* Not EV_PERSIST: each tick is due a whole interval after the last one ran. */
	w->ev = evtimer_new(base, tick_cb, w);
	if (!w->ev)
		return -ENOMEM;
	w->due_us = now_us() + LOOPWATCH_TICK_US;
	w->cpu_us = thread_cpu_us();
	w->schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	w->wait_us = runq_wait_us(w->schedstat_fd);
	return evtimer_add(w->ev, &tick) < 0 ? -EIO : 0;
}

void loopwatch_stop(struct loopwatch *w)
{
	if (!w->ev)
		return; /* never started */
	event_free(w->ev);
	w->ev = NULL;
	if (w->schedstat_fd >= 0)
		close(w->schedstat_fd);
	w->schedstat_fd = -1;
}

void loopwatch_report(const struct loopwatch *w, struct status_report *r)
{
	status_report_histogram(r, "loop_late", &w->late,
				"the daemon's loop: delay of a 10 ms tick past its due time");
	status_report_gauge(r, "loop_held_max", "seconds", w->max_us / 1e6,
			    "the daemon's loop: longest it ran nothing else (a tick's delay)");
	status_report_gauge(r, "loop_held_max_cpu", "seconds", w->max_cpu_us / 1e6,
			    "the daemon's CPU time over that longest delay (about all of it: one "
			    "callback held the loop; little: the machine did not run us)");
	status_report_gauge(r, "loop_held_max_wait", "seconds", w->max_wait_us / 1e6,
			    "of that longest delay, the time runnable and waiting for a CPU");
	status_report_gauge(r, "loop_held_max_ago", "seconds",
			    w->max_at_us ? (now_us() - w->max_at_us) / 1e6 : 0,
			    "how long ago that longest delay ended");
}
