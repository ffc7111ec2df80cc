/*
 * precopy.c - the loop's side of pre-copy (capture/precopy.h): an epoch's
 * rounds run in steps of bounded size from a zero-timeout timer, so
 * heartbeats, ACKs and the lease timer run between them, and the epoch's
 * stop comes when a round ends small (or more rounds would not help) and
 * the backup can take the epoch. Rounds start only when the epoch could
 * go; one that has converged while the link was busy is refreshed by one
 * more round at each epoch tick, so what the stop copies stays small.
 */
#include "guard.h"
#include "log.h"
#include "loopwatch.h"
#include "util.h"

/*
 * Read per step. 32 MiB held the loop 250-430 ms on the loaded VM (1 GiB
 * burst, loopwatch_note); 8 MiB is a quarter of that.
 */
#define STEP_BYTES (8u << 20)
/* Rounds while waiting for a GC cycle to end: one per this many us. */
#define GC_POLL_US 10000

static bool rounds_may_run(struct guard *g)
{
	/* Not while an epoch's reach scan owns the session's capture (guard.c). */
	return g->sess && g->link.hello_ok && !g->ended && pfailover_ships_epochs(g) &&
	       !keeper_holds(&g->keeper) && !guard_after_pending(g);
}

static void precopy_run(struct guard *g)
{
	static const struct timeval now = {0, 0}, soon = {0, GC_POLL_US};
	char why[200] = "";

	/*
	 * A round that fails fails again every epoch, and the epoch's own
	 * capture follows it: that one says what fails, once per change
	 * (guard_check, UNPROTECTED). So the round's errors are held, and told
	 * at debug level only.
	 */
	log_hold_errors(why, sizeof(why));
	const struct precopy *p = &g->sess->pre;
	bool begins = !p->active || p->todo_pos == p->n_todo;
	uint64_t t0 = now_us();
	int r = capture_session_precopy_step(g->sess, g->need_full, STEP_BYTES);
	loopwatch_note(g->svc->name, begins ? "a pre-copy step that began a round" : "a pre-copy step",
		       t0);
	log_hold_errors(NULL, 0);
	if (r < 0) {
		if (r != -ENOTSUP)
			log_debug("%s: pre-copy round failed (%s); this epoch is copied in its stop",
				  g->svc->name, why[0] ? why : strerror(-r));
		if (guard_epoch_may_ship(g))
			(void)guard_ship_epoch(g, false);
		return;
	}
	if (r == 0) {
		evtimer_add(g->precopy_ev, &now);
		return;
	}
	if (!capture_session_precopy_ready(g->sess)) {
		/* A small round and still not ready: the runtime is in a GC cycle. */
		evtimer_add(g->precopy_ev, capture_session_precopy_converged(g->sess) ? &soon : &now);
		return;
	}
	if (guard_epoch_may_ship(g))
		(void)guard_ship_epoch(g, false);
	/* else the next epoch tick runs one more round and tries again */
}

static void step_cb(evutil_socket_t fd, short what, void *arg)
{
	struct guard *g = arg;
	(void)fd, (void)what;
	if (rounds_may_run(g))
		precopy_run(g);
}

bool guard_precopy_tick(struct guard *g)
{
	if (!g->sess || !g->sess->use_precopy)
		return false;
	if (!g->precopy_ev && !(g->precopy_ev = evtimer_new(g->base, step_cb, g)))
		return false;
	if (evtimer_pending(g->precopy_ev, NULL) || guard_after_pending(g))
		return true; /* a round is under way, or the last epoch is still being made ready */
	/*
	 * Rounds start when the epoch could go (not while the last one is on
	 * the wire): rounds run on the loop, and more of them while waiting
	 * would only take CPU from sending.
	 */
	if (!capture_session_precopy_converged(g->sess) && !guard_epoch_may_ship(g))
		return true;
	precopy_run(g);
	return true;
}
