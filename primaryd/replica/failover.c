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
#include "util.h"

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
	_cleanup_free_ char *boot = NULL, *stat = NULL;
	char path[64];
	unsigned long long start = 0;
	uint64_t h = 0x636865636b73796eULL;
	const char *p;

	if (read_file("/proc/sys/kernel/random/boot_id", &boot) > 0)
		for (p = boot; *p && *p != '\n'; p++)
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
		g->incarnation = fresh_incarnation();
}

void pfailover_start(struct guard *g, uint64_t now)
{
	g->fo = (struct pfailover){.state = PFAILOVER_PROTECTED, .lease_from_us = now};
	if (!g->svc->command.argc)
		g->incarnation = process_incarnation(g->pid);
	log_info("%s: incarnation %016" PRIx64 " (pid %d) under guard", g->svc->name,
		 g->incarnation, g->pid);
}

void pfailover_backup_hello(struct guard *g, uint64_t image_incarnation)
{
	if (g->fo.state != PFAILOVER_STARTING)
		return;
	if (image_incarnation && image_incarnation != g->incarnation)
		log_warn("%s: the backup lets this run replace its image of incarnation %016" PRIx64,
			 g->svc->name, image_incarnation);
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
	if (g->fo.state == PFAILOVER_STARTING)
		log_warn("%s: the backup has taken over the last run (%s): not starting the service "
			 "here",
			 g->svc->name, why);
	else
		log_error("%s: the backup has taken over (%s): killing our copy of the service",
			  g->svc->name, why);
	g->fo.state = PFAILOVER_DEPOSED;
	g->deposed = true;
	if (g->pid > 0)
		kill(g->pid, SIGKILL);
}

bool pfailover_ships_epochs(const struct guard *g) { return g->fo.state == PFAILOVER_PROTECTED; }
