/*
 * loopwatch.h - how long a daemon's event loop was held: by one callback
 * that ran too long, or by the machine not running us.
 *
 * A timer ticks every LOOPWATCH_TICK_US; the delay of each tick past its
 * due time is how long the loop could not run anything else (a heartbeat,
 * an ACK, the lease timer). The thread's CPU time over the same gap tells
 * the causes apart: a callback that held the loop spent about the gap in
 * CPU; a loop that was runnable and not scheduled spent it waiting for a
 * CPU (the scheduler's run-queue delay, /proc/thread-self/schedstat); the
 * rest of the gap it was blocked in a system call. One writer: the loop.
 */
#pragma once

#include <stdint.h>

#include "hist.h"

#define LOOPWATCH_TICK_US 10000
#define LOOPWATCH_SAY_US 200000 /* a delay this long is logged (info) */

struct event;
struct event_base;
struct status_report;

struct loopwatch {
	struct event *ev;
	uint64_t due_us, cpu_us, wait_us; /* when the tick was due; the thread's CPU time and run-queue delay then */
	int schedstat_fd;
	struct hist late;	 /* every tick's delay past its due time */
	uint64_t max_us, max_cpu_us, max_wait_us, max_at_us; /* the longest delay, its CPU time and run-queue delay, when */
};

/*
 * A callback that knows what it did: when it ran since_us for
 * LOOPWATCH_SAY_US or more, log that it held the loop (beside the tick's
 * own line, which cannot tell what held it).
 */
void loopwatch_note(const char *who, const char *what, uint64_t since_us);

int loopwatch_start(struct loopwatch *w, struct event_base *base);
void loopwatch_stop(struct loopwatch *w);
/* The loop_* rows of status and /metrics (for the current service: the loop is the daemon's). */
void loopwatch_report(const struct loopwatch *w, struct status_report *r);
