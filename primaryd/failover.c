/*
 * failover.c - see failover.h: the primary's failover states and their
 * transitions, freezing, thawing and killing the service as they go.
 */
#include "failover.h"

#include <inttypes.h>
#include <signal.h>
#include <sys/random.h>

#include "guard.h"
#include "log.h"
#include "outcommit.h"
#include "util.h"
#include "witness.h"

static void thaw(struct guard *g);
static void finish(struct guard *g, bool ok, const char *what);
static void handover_failed(struct guard *g, const char *why);

const char *pfailover_state_name(enum pfailover_state state)
{
	switch (state) {
	case PFAILOVER_STARTING:
		return "starting";
	case PFAILOVER_PROTECTED:
		return "primary";
	case PFAILOVER_FROZEN:
		return "frozen";
	case PFAILOVER_DEPOSED:
		return "deposed";
	case PFAILOVER_HANDING_OVER:
		return "handing-over";
	case PFAILOVER_STOPPING:
		return "stopping";
	case PFAILOVER_STOPPED:
		return "stopped";
	case PFAILOVER_STANDBY:
		return "standby";
	}
	return "?";
}

static uint64_t mix64(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	h ^= h >> 31;
	h *= 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 29);
}

/* The same process gives the same id, whichever primaryd asks: boot id, pid, start time. */
static uint64_t process_incarnation(pid_t pid)
{
	_cleanup_free_ char *stat = NULL;
	char path[64], boot[64];
	unsigned long long start = 0;
	uint64_t h = 0x636865636b73796eULL;
	const char *p;

	if (read_boot_id(boot, sizeof(boot)) >= 0)
		for (p = boot; *p; p++)
			h = mix64(h, (unsigned char)*p);
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	/* Field 22, after the command name in parentheses, which may hold anything. */
	if (read_file(path, &stat) > 0 && (p = strrchr(stat, ')')))
		(void)sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
				    "%*d %*d %*d %llu",
			     &start);
	h = mix64(mix64(h, (uint64_t)pid), start);
	return h ? h : 1;
}

static uint64_t fresh_incarnation(void)
{
	uint64_t id = 0;

	while (!id)
		if (getrandom(&id, sizeof(id), 0) != sizeof(id))
			id = mix64(now_us(), (uint64_t)getpid());
	return id;
}

void pfailover_init(struct guard *g)
{
	g->fo = (struct pfailover){.state = PFAILOVER_STARTING};
	if (g->svc->command.argc)
		g->fo.incarnation = fresh_incarnation();
	if (g->svc->role_swap && !g->svc->starts_here) {
		/* Only the first of its hosts starts the service; the others take it over. */
		g->fo.state = PFAILOVER_STANDBY;
			log_info("%s: standby: the first of its hosts starts the service, this one only "
			 "takes it over",
			 g->svc->name);
	}
}

void pfailover_adoption_failed(struct guard *g)
{
	g->fo = (struct pfailover){.state = PFAILOVER_STANDBY};
}

void pfailover_adopted(struct guard *g, uint64_t incarnation)
{
	g->fo.incarnation = incarnation;
	g->fo.lease_waived = true;
	outcommit_pass(g->oc, true); /* nobody could acknowledge what it sends */
	log_info("%s: adopted the restored service (pid %d, incarnation %016" PRIx64
		 "): primary here, unprotected until backup %s answers",
		 g->svc->name, g->pid, incarnation, g->svc->backup_name);
}

void pfailover_start(struct guard *g, uint64_t now)
{
	g->fo = (struct pfailover){.state = PFAILOVER_PROTECTED,
				   .lease_from_us = now,
				   .incarnation = g->fo.incarnation};
	witness_want(g->witness, true); /* the serving host holds the key */
	if (!g->svc->command.argc)
		g->fo.incarnation = process_incarnation(g->pid);
	log_info("%s: incarnation %016" PRIx64 " (pid %d) under guard", g->svc->name,
		 g->fo.incarnation, g->pid);
}

void pfailover_backup_hello(struct guard *g, uint64_t image_incarnation)
{
	if (g->fo.state == PFAILOVER_HANDING_OVER) {
		/* It accepts us as primary: it is not restoring, the handover did not happen. */
		handover_failed(g, "the link was lost and the backup took nothing over");
		return;
	}
	if (g->fo.state == PFAILOVER_STOPPING) {
		g->fo.state = PFAILOVER_PROTECTED;
		finish(g, false, "the link was lost before the backup stood down");
		return;
	}
	if (g->fo.lease_waived) {
		g->fo.lease_waived = false; /* a backupd renews it from now on */
		outcommit_pass(g->oc, false);
		log_info("%s: backup %s answered: the adopted service is replicated there",
			 g->svc->name, g->svc->backup_name);
	}
	if (g->fo.state != PFAILOVER_STARTING)
		return;
	if (image_incarnation && image_incarnation != g->fo.incarnation)
		log_warn("%s: the backup lets this run replace its image of incarnation %016" PRIx64,
			 g->svc->name, image_incarnation);
	char why[400];
	enum peer_answer peer = g->svc->role_swap ? guard_peer_serves(g, why, sizeof(why))
						  : PEER_RUNS_NOWHERE;
	if (peer == PEER_SERVES) {
		/* Its backupd did not know (it lost its state, say); ours does. */
		log_warn("%s: the backup answered, but %s; standby, starting nothing", g->svc->name,
			 why);
		g->fo.state = PFAILOVER_STANDBY;
		link_close(g, "the run lives on elsewhere");
		return;
	}
	if (peer == PEER_UNKNOWN) {
		if (!g->fo.peer_unknown_logged)
			log_warn("%s: the backup answered, but %s: not starting the service until it "
				 "says whether the peer serves",
				 g->svc->name, why);
		g->fo.peer_unknown_logged = true;
		link_close(g, "this host's backupd cannot say whether the peer serves");
		link_schedule_reconnect(g);
		return;
	}
	log_info("%s: the backup answered: starting the service", g->svc->name);
	if (guard_start_service(g) < 0)
		log_error("%s: the service did not start; trying again when the backup answers "
			  "again",
			  g->svc->name);
}

uint32_t pfailover_hello_flags(const struct guard *g)
{
	return g->fo.state == PFAILOVER_STARTING ? WIRE_HELLO_FRESH : 0;
}

static bool lease_lapsed(const struct guard *g, uint64_t now)
{
	return now > g->fo.lease_from_us &&
	       now - g->fo.lease_from_us > (uint64_t)g->svc->lease_ms * 1000;
}

void pfailover_backup_heard(struct guard *g, uint64_t sent_us)
{
	if (sent_us > g->fo.lease_from_us)
		g->fo.lease_from_us = sent_us;
	if (g->fo.state != PFAILOVER_FROZEN || g->fo.then_stop || lease_lapsed(g, now_us()))
		return;
	thaw(g);
}

static void thaw(struct guard *g)
{
	int r;

	r = capture_session_thaw(g->sess);
	if (r < 0) {
		log_warn("%s: cannot thaw the service: %s", g->svc->name, strerror(-r));
		return;
	}
	g->fo.state = PFAILOVER_PROTECTED;
	if (g->fo.lease_frozen_at_us) {
		uint64_t took = now_us() - g->fo.lease_frozen_at_us;
		if (took > g->fo.lease_freeze_longest_us)
			g->fo.lease_freeze_longest_us = took;
		g->fo.lease_frozen_at_us = 0;
	}
	log_info("%s: backup heard again: service running", g->svc->name);
}

uint64_t pfailover_freeze_longest_us(const struct guard *g, uint64_t now)
{
	uint64_t cur = g->fo.lease_frozen_at_us ? now - g->fo.lease_frozen_at_us : 0;
	return cur > g->fo.lease_freeze_longest_us ? cur : g->fo.lease_freeze_longest_us;
}

uint64_t pfailover_runs_until(const struct guard *g)
{
	uint64_t lease_end = g->fo.lease_from_us + (uint64_t)g->svc->lease_ms * 1000, key;

	if (g->svc->on_backup_loss != BACKUP_LOSS_CONTINUE)
		return lease_end;
	if (!g->svc->witness.n)
		return UINT64_MAX;
	key = witness_until(g->witness);
	return key > lease_end ? key : lease_end;
}

bool pfailover_backup_lost(const struct guard *g, uint64_t now)
{
	return g->fo.state == PFAILOVER_PROTECTED && lease_lapsed(g, now) &&
	       now < pfailover_runs_until(g);
}

void pfailover_lease_tick(struct guard *g)
{
	uint64_t now = now_us();
	int r;

	if (g->fo.lease_waived) {
		g->fo.lease_from_us = now; /* the keeper follows it (guard.c) */
		return;
	}
	if (g->fo.state != PFAILOVER_PROTECTED || !lease_lapsed(g, now) ||
	    now < pfailover_runs_until(g))
		return;
	/*
	 * The lease is judged on what the backup sent: bytes of it still
	 * unread (our loop was held; a timer may run before the loop polls the
	 * socket again) may hold the heartbeat that renews it. They are read
	 * first, and the lease judged again, within a heartbeat interval.
	 */
	if (link_input_waits(g) && guard_lease_judge_later(g, now))
		return;
	r = capture_session_freeze(g->sess);
	if (r < 0) {
		log_warn("%s: cannot freeze the service: %s", g->svc->name, strerror(-r));
		return;
	}
	g->fo.state = PFAILOVER_FROZEN;
	g->fo.lease_frozen_at_us = now;
	g->fo.lease_freezes++;
	if (g->witness)
		log_warn("%s: backup not heard for over %u ms (lease) and no lease on the witness's "
			 "key (%s): service frozen",
			 g->svc->name, g->svc->lease_ms,
			 witness_error(g->witness)[0] ? witness_error(g->witness) : "not renewed");
	else
		log_warn("%s: backup not heard for %u ms (lease): service frozen", g->svc->name,
			 g->svc->lease_ms);
}

static void finish(struct guard *g, bool ok, const char *what)
{
	pfailover_done_fn done = g->fo.done;

	g->fo.done = NULL;
	if (done)
		done(g, ok, what, g->fo.done_arg);
}

static void handed_over(struct guard *g, const char *why)
{
	uint64_t now = now_us(), total = (now - g->fo.frozen_at_us) / 1000;
	char what[512];

	snprintf(what, sizeof(what),
		 "%s: handed over to the backup at epoch %lu: unavailable for %lu ms (final epoch "
		 "acknowledged %lu ms after the freeze; the backup says: %s)",
		 g->svc->name, (unsigned long)g->fo.final_epoch, (unsigned long)total,
		 (unsigned long)((g->fo.acked_at_us ? g->fo.acked_at_us : now) - g->fo.frozen_at_us) /
		     1000,
		 why);
	log_info("%s", what);
	g->fo.state = g->svc->role_swap ? PFAILOVER_STANDBY : PFAILOVER_DEPOSED; /* may adopt again */
	witness_want(g->witness, false);
	if (g->pid > 0)
		kill(g->pid, SIGKILL);
	finish(g, true, what);
}

void pfailover_deposed(struct guard *g, const char *why)
{
	if (g->fo.state == PFAILOVER_HANDING_OVER) {
		handed_over(g, why);
		return;
	}
	if (g->fo.state == PFAILOVER_DEPOSED || g->fo.state == PFAILOVER_STOPPED ||
	    g->fo.state == PFAILOVER_STANDBY)
		return;
	if (g->fo.state == PFAILOVER_STARTING)
		log_warn("%s: the backup has taken over the last run (%s): not starting the service "
			 "here",
			 g->svc->name, why);
	else
		log_error("%s: the backup has taken over (%s): killing our copy of the service",
			  g->svc->name, why);
	/* Role swap: the peer serves, and our own backupd may hand the service back later. */
	g->fo.state = g->svc->role_swap ? PFAILOVER_STANDBY : PFAILOVER_DEPOSED;
	g->fo.lease_waived = false;
	witness_want(g->witness, false);
	if (g->pid > 0)
		kill(g->pid, SIGKILL);
}

bool pfailover_ships_epochs(const struct guard *g) { return g->fo.state == PFAILOVER_PROTECTED; }

bool pfailover_deposed_state(const struct guard *g)
{
	return g->fo.state == PFAILOVER_DEPOSED || g->fo.state == PFAILOVER_STOPPED ||
	       g->fo.state == PFAILOVER_STANDBY;
}

/* ---------- planned handover ---------- */

static void handover_failed(struct guard *g, const char *why)
{
	char what[512];

	g->fo.state = PFAILOVER_FROZEN;
	if (g->fo.then_stop) {
		/*
		 * primaryd is stopping: the service stops with it, so it must not
		 * run (and acknowledge writes) in between. Frozen as its final
		 * epoch, which the backup holds, it loses nothing: the backup takes
		 * over from that epoch after its failover timeout.
		 */
		snprintf(what, sizeof(what), "%s: handover failed: %s; the service stays frozen as "
			 "of the final epoch %lu, which the backup holds", g->svc->name, why,
			 (unsigned long)g->fo.final_epoch);
		log_warn("%s", what);
		finish(g, false, what);
		return;
	}
	snprintf(what, sizeof(what), "%s: handover failed: %s; the service runs here again",
		 g->svc->name, why);
	log_warn("%s", what);
	g->fo.lease_from_us = now_us(); /* the backup answered just now */
	witness_want(g->witness, true);
	thaw(g);
	finish(g, false, what);
}

void pfailover_handover_to_stop(struct guard *g, pfailover_done_fn done, void *arg)
{
	pfailover_handover(g, done, arg);
	if (g->fo.state == PFAILOVER_HANDING_OVER)
		g->fo.then_stop = true;
}

void pfailover_handover(struct guard *g, pfailover_done_fn done, void *arg)
{
	char what[256];
	int r;

	if (g->fo.state != PFAILOVER_PROTECTED || !g->link.hello_ok) {
		snprintf(what, sizeof(what), "%s: cannot hand over: %s", g->svc->name,
			 g->fo.state != PFAILOVER_PROTECTED ? pfailover_state_name(g->fo.state)
							    : "the backup is not connected");
		done(g, false, what, arg);
		return;
	}
	g->fo.done = done;
	g->fo.done_arg = arg;
	g->fo.frozen_at_us = now_us();
	g->fo.acked_at_us = 0;
	g->fo.handover_sent = false;
	g->fo.then_stop = false;
	r = guard_ship_epoch(g, true); /* frozen from the capture on */
	if (r < 0) {
		snprintf(what, sizeof(what), "cannot capture the final epoch: %s", strerror(-r));
		g->fo.state = PFAILOVER_PROTECTED;
		finish(g, false, what);
		return;
	}
	g->fo.state = PFAILOVER_HANDING_OVER;
	g->fo.final_epoch = g->epoch;
	log_info("%s: handing over: service frozen, final epoch %lu shipped", g->svc->name,
		 (unsigned long)g->epoch);
	pfailover_acked(g, g->acked);
}

void pfailover_acked(struct guard *g, uint64_t epoch)
{
	if (g->fo.state != PFAILOVER_HANDING_OVER || g->fo.handover_sent ||
	    epoch < g->fo.final_epoch)
		return;
	g->fo.acked_at_us = now_us();
	witness_want(g->witness, false); /* frozen: the backup restores only with the key */
	if (link_send_handover(g, g->fo.final_epoch) < 0)
		return; /* the link is gone: the backup's next HELLO decides */
	g->fo.handover_sent = true;
}

void pfailover_handover_failed(struct guard *g, const char *why)
{
	if (g->fo.state == PFAILOVER_HANDING_OVER)
		handover_failed(g, why);
}

/* ---------- stop everywhere ---------- */

void pfailover_stop_everywhere(struct guard *g, pfailover_done_fn done, void *arg)
{
	char what[256];

	if ((g->fo.state != PFAILOVER_PROTECTED && g->fo.state != PFAILOVER_FROZEN) ||
	    !g->link.hello_ok || link_send_stand_down(g) < 0) {
		snprintf(what, sizeof(what), "%s: cannot stop everywhere: %s", g->svc->name,
			 g->link.hello_ok ? pfailover_state_name(g->fo.state)
				     : "the backup is not connected (it must agree not to take over)");
		done(g, false, what, arg);
		return;
	}
	g->fo.done = done;
	g->fo.done_arg = arg;
	g->fo.state = PFAILOVER_STOPPING;
	log_info("%s: stopping everywhere: asking the backup to stand down", g->svc->name);
}

void pfailover_stood_down(struct guard *g, const char *why)
{
	char what[512];

	if (g->fo.state != PFAILOVER_STOPPING)
		return;
	snprintf(what, sizeof(what), "%s: stopped everywhere (%s)", g->svc->name, why);
	log_info("%s", what);
	g->fo.state = PFAILOVER_STOPPED;
	witness_want(g->witness, false);
	if (g->pid > 0)
		kill(g->pid, SIGKILL);
	finish(g, true, what);
}
