/*
 * resume.c - after a reconnect, go on from the epoch the backup holds
 * instead of sending the whole service again.
 *
 * A delta on epoch E carries every write since E's capture only if E is
 * the last epoch we captured (write tracking re-arms at each capture; an
 * adopted service's epoch was captured elsewhere, with nothing tracked here since), the
 * backup holds exactly that epoch of this run, no capture has failed since
 * (a failed one may have re-armed writes it never shipped), and the
 * last-shipped page cache still holds what the backup holds (it is updated
 * as E was encoded, all of which the backup committed). Anything else: a
 * full epoch, pre-copied (precopy.c).
 */
#include <inttypes.h>

#include "guard.h"
#include "log.h"

static const char *why_full(const struct guard *g, const struct wire_hello *h)
{
	if (!g->sess)
		return "the service is not held yet";
	if (!g->sess->use_wp)
		return "dirty_tracking = hash";
	if (!h->epoch || !g->sent)
		return "no epoch sent and held yet";
	if (!g->sent_captured)
		return "the last epoch was not captured here (the service was adopted at it)";
	if (h->incarnation != g->fo.incarnation)
		return "the backup holds another run's image";
	if (h->epoch != g->sent)
		return "the backup holds an older epoch than the last one sent";
	if (g->capture_err[0])
		return "a capture failed since";
	return NULL;
}

bool guard_may_resume(struct guard *g, const struct wire_hello *h)
{
	const char *why = why_full(g, h);

	if (!why) {
		log_info("%s: the backup holds epoch %" PRIu64 ", the last one sent: going on from it",
			 g->svc->name, h->epoch);
		g->resumed++;
		return true;
	}
	if (h->epoch || g->sent)
		log_info("%s: next epoch full (backup holds epoch %" PRIu64 ", last sent %" PRIu64
			 "): %s",
			 g->svc->name, h->epoch, g->sent, why);
	return false;
}
