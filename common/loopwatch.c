/*
 * loopwatch.c - see loopwatch.h.
 */
#include "loopwatch.h"

#include <event2/event.h>
#include <time.h>

#include "log.h"
#include "status.h"
#include "util.h"

static uint64_t thread_cpu_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const struct timeval tick = {0, LOOPWATCH_TICK_US};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loopwatch *w = arg;
	uint64_t now = now_us(), cpu = thread_cpu_us();
	uint64_t late = now > w->due_us ? now - w->due_us : 0;
	(void)fd, (void)what;

	hist_add_us(&w->late, late);
	/* Longer than this and a peer's heartbeats went unanswered: worth a line, with its cause. */
	if (late >= LOOPWATCH_SAY_US)
		log_info("our loop ran nothing else for %lu ms (%lu ms of it our CPU: %s)",
			 (unsigned long)(late / 1000), (unsigned long)((cpu - w->cpu_us) / 1000),
			 (cpu - w->cpu_us) * 2 > late ? "a callback held it"
						      : "the machine did not run us, or a call blocked");
	if (late > w->max_us) {
		w->max_us = late;
		/* Over the whole gap: the tick's own work is noise beside a held loop. */
		w->max_cpu_us = cpu - w->cpu_us;
		w->max_at_us = now;
	}
	w->due_us = now + LOOPWATCH_TICK_US;
	w->cpu_us = cpu;
	evtimer_add(w->ev, &tick);
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
	return evtimer_add(w->ev, &tick) < 0 ? -EIO : 0;
}

void loopwatch_stop(struct loopwatch *w)
{
	if (w->ev)
		event_free(w->ev);
	w->ev = NULL;
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
	status_report_gauge(r, "loop_held_max_ago", "seconds",
			    w->max_at_us ? (now_us() - w->max_at_us) / 1e6 : 0,
			    "how long ago that longest delay ended");
}
