/*
 * restorer.h - a restore run off the event loop, in a forked child, with a
 * deadline.
 *
 * The daemon must keep answering (heartbeats, status, the watchdog) while
 * a husk is rebuilt, and a restore that hangs (an injected call that never
 * returns; each has its own deadline too, inject.h) must not hold the
 * service: the child is killed at the overall deadline, its husk dies
 * with it (PTRACE_O_EXITKILL), and the caller hears why.
 *
 * The restored process is the restorer's child, so our grandchild. The
 * daemon is made a child subreaper (PR_SET_CHILD_SUBREAPER) so that when
 * the restorer exits, the service is reparented to us, not to init, and
 * can still be watched and reaped by pidfd (child.h).
 */
#pragma once

#include <sys/types.h>

struct event_base;
struct image;
struct restore_opts;
struct restorer;

/* How long a whole restore may take before its child is killed. */
#define RESTORER_DEADLINE_MS 20000

/*
 * Called once, on the event loop: pid > 0 and err 0 on success; else err
 * is a negative errno (-ETIMEDOUT at the deadline) and why says what
 * happened, the restorer having logged the failing step itself. The
 * restorer has been freed by then.
 */
typedef void (*restorer_done_fn)(pid_t pid, int err, const char *why, void *arg);

/*
 * Called on the event loop when the process is rebuilt under pid but still
 * held: record it (0) and it is let go; a negative errno aborts the restore
 * (done then reports -ECANCELED). Nothing restored runs before this says 0.
 */
typedef int (*restorer_ready_fn)(pid_t pid, void *arg);

/*
 * Restore img (validated, pages in memory) in a child; img and opts may be
 * released as soon as this returns (the child has its own copy of our
 * memory). Returns 0 or -errno.
 */
int restorer_start(struct event_base *base, const struct image *img,
		   const struct restore_opts *opts, unsigned deadline_ms, restorer_ready_fn ready,
		   restorer_done_fn done, void *arg, struct restorer **out);

/* Kill a restore under way, without a callback. NULL is allowed. */
void restorer_cancel(struct restorer *rs);
