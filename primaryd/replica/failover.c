/*
 * failover.c - see failover.h: the primary's failover states and their
 * transitions, freezing, thawing and killing the service as they go.
 */
#include "failover.h"

#include <signal.h>

#include "guard.h"
#include "log.h"
#include "util.h"

const char *pfailover_state_name(enum pfailover_state state)
{
	switch (state) {
	case PFAILOVER_PROTECTED:
		return "primary";
	case PFAILOVER_FROZEN:
		return "frozen";
	case PFAILOVER_DEPOSED:
		return "deposed";
	}
	return "?";
}

void pfailover_start(struct guard *g, uint64_t now)
{
	g->fo = (struct pfailover){.state = PFAILOVER_PROTECTED, .lease_from_us = now};
}

static bool lease_lapsed(const struct guard *g, uint64_t now)
{
	return now > g->fo.lease_from_us &&
	       now - g->fo.lease_from_us > (uint64_t)g->svc->lease_ms * 1000;
}

void pfailover_backup_heard(struct guard *g, uint64_t sent_us)
{
	int r;

	if (sent_us > g->fo.lease_from_us)
		g->fo.lease_from_us = sent_us;
	if (g->fo.state != PFAILOVER_FROZEN || lease_lapsed(g, now_us()))
		return;
	r = capture_session_thaw(g->sess);
	if (r < 0) {
		log_warn("%s: cannot thaw the service: %s", g->svc->name, strerror(-r));
		return;
	}
	g->fo.state = PFAILOVER_PROTECTED;
	log_info("%s: backup heard again: service running", g->svc->name);
}

void pfailover_lease_tick(struct guard *g)
{
	int r;

	if (g->fo.state != PFAILOVER_PROTECTED || !lease_lapsed(g, now_us()))
		return;
	r = capture_session_freeze(g->sess);
	if (r < 0) {
		log_warn("%s: cannot freeze the service: %s", g->svc->name, strerror(-r));
		return;
	}
	g->fo.state = PFAILOVER_FROZEN;
	log_warn("%s: backup not heard for %u ms (lease): service frozen", g->svc->name,
		 g->svc->lease_ms);
}

void pfailover_deposed(struct guard *g, const char *why)
{
	if (g->fo.state == PFAILOVER_DEPOSED)
		return;
	log_error("%s: the backup has taken over (%s): killing our copy of the service",
		  g->svc->name, why);
	g->fo.state = PFAILOVER_DEPOSED;
	g->deposed = true;
	if (g->pid > 0)
		kill(g->pid, SIGKILL);
}

bool pfailover_ships_epochs(const struct guard *g) { return g->fo.state == PFAILOVER_PROTECTED; }
