/*
 * debuginfo.c - does this host have the DWARF a takeover needs?
 *
 * A restore whose thread ids are taken here gives the threads new ones and
 * patches the Go runtime's m.procid from the executable's DWARF
 * (restore/gopatch.c). The backup looks that DWARF up the way the
 * restore will (goruntime.h) when the service is opened and again at each
 * HELLO, so a missing debug file is said while the primary still runs,
 * not found out during a takeover. The lookup only opens files: the
 * executable, and the candidates libdwfl checks.
 */
#include "log.h"
#include "service.h"
#include "util.h"

void service_check_debuginfo(struct service *svc, const char *peer)
{
	struct go_debuginfo *di = &svc->debuginfo;
	const char *exe = svc->cfg->executable;
	int r = go_debuginfo_find(exe, svc->cfg->debug_file, NULL, di);

	if (r < 0) {
		*di = (struct go_debuginfo){0};
		snprintf(di->why, sizeof(di->why), "cannot read %s: %s", exe, strerror(-r));
	}
	if (di->source == GO_DEBUG_NONE)
		log_warn("%s: %s%sthis host has no DWARF for the service: a takeover here whose "
			 "thread ids are taken restores it unpatched, and Go's preemption "
			 "signals may go astray (%s)",
			 svc->cfg->name, peer ? "primary connected from " : "", peer ? peer : "",
			 di->why);
	else if (!peer && di->source != GO_DEBUG_EXE)
		log_info("%s: DWARF for %s from %s (%s)", svc->cfg->name, exe, di->path,
			 go_debug_source_name(di->source));
}

const char *service_debuginfo_text(const struct service *svc, char *buf, size_t len)
{
	const struct go_debuginfo *di = &svc->debuginfo;

	if (di->source != GO_DEBUG_NONE)
		return di->path;
	snprintf(buf, len, "missing: no DWARF for %s on this host (see the log)",
		 svc->cfg->executable);
	return buf;
}
