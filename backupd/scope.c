/*
 * scope.c - see scope.h. One synchronous StartTransientUnit call on the
 * system bus (sd-bus): it answers in milliseconds, and its job only moves
 * a running process, so nothing here waits for the scope to "start".
 */
#include "scope.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>

#include "util.h"

static inline void bus_unrefp(sd_bus **b) { sd_bus_flush_close_unref(*b); }
static inline void message_unrefp(sd_bus_message **m) { sd_bus_message_unref(*m); }

/* A scope call that may take a while before systemd answers: not on our watchdog's clock. */
#define SCOPE_CALL_TIMEOUT_US (2 * 1000 * 1000)

static int start_scope(sd_bus *bus, const char *unit, const char *service, pid_t pid,
		       sd_bus_error *error)
{
	__attribute__((cleanup(message_unrefp))) sd_bus_message *m = NULL, *reply = NULL;
	char description[256];
	int r;

	snprintf(description, sizeof(description), "%s, restored by checksync-backupd", service);
	r = sd_bus_message_new_method_call(bus, &m, "org.freedesktop.systemd1",
					   "/org/freedesktop/systemd1",
					   "org.freedesktop.systemd1.Manager", "StartTransientUnit");
	if (r >= 0)
		r = sd_bus_message_append(m, "ss", unit, "fail");
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "(sv)");
	if (r >= 0)
		r = sd_bus_message_append(m, "(sv)(sv)(sv)", "Description", "s", description,
					  "PIDs", "au", 1, (uint32_t)pid,
					  /* a stopped scope does not linger as "failed" */
					  "CollectMode", "s", "inactive-or-failed");
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_append(m, "a(sa(sv))", 0); /* no auxiliary units */
	if (r < 0)
		return r;
	return sd_bus_call(bus, m, SCOPE_CALL_TIMEOUT_US, error, &reply);
}

int scope_adopt(const char *service, pid_t pid, char *unit, size_t unitlen, char *err,
		size_t errlen)
{
	__attribute__((cleanup(bus_unrefp))) sd_bus *bus = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	if (sd_booted() <= 0)
		return -ENOMEDIUM;
	r = sd_bus_open_system(&bus);
	if (r < 0) {
		snprintf(err, errlen, "cannot reach systemd on the system bus: %s", strerror(-r));
		return r;
	}
	snprintf(unit, unitlen, "checksync-%s.scope", service);
	r = start_scope(bus, unit, service, pid, &error);
	if (r < 0 && sd_bus_error_has_name(&error, "org.freedesktop.systemd1.UnitExists")) {
		sd_bus_error_free(&error);
		snprintf(unit, unitlen, "checksync-%s-%d.scope", service, (int)pid);
		r = start_scope(bus, unit, service, pid, &error);
	}
	if (r < 0)
		snprintf(err, errlen, "systemd refused scope %s for pid %d: %s", unit, (int)pid,
			 error.message ? error.message : strerror(-r));
	sd_bus_error_free(&error);
	return r < 0 ? r : 0;
}
