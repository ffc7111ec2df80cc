/*
 * scope.c - see scope.h. One synchronous StartTransientUnit call on the
 * system bus (sd-bus): it answers in milliseconds. Its reply may come
 * before the job has moved the process, and the restorer's husk must be
 * in the scope before it connects its journal stream (restorer.c), so we
 * return only once sd_pid_get_unit() names the scope.
 */
#include "scope.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-login.h>
#include <time.h>

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

/* Whether pid is in unit want or, want NULL, already in a scope of service's (named in unit). */
static bool in_unit(pid_t pid, const char *service, const char *want, char *unit, size_t unitlen)
{
	_cleanup_free_ char *now = NULL;
	char a[256], b[256];

	if (sd_pid_get_unit(pid, &now) < 0)
		return false;
	if (want)
		return strcmp(now, want) == 0;
	snprintf(a, sizeof(a), "checksync-%s.scope", service);
	snprintf(b, sizeof(b), "checksync-%s-%d.scope", service, (int)pid);
	if (strcmp(now, a) != 0 && strcmp(now, b) != 0)
		return false;
	snprintf(unit, unitlen, "%s", now);
	return true;
}

/* The scope's job moves the pid soon after its reply: wait for that, up to the call's timeout. */
static int await_move(pid_t pid, const char *unit)
{
	const struct timespec tick = {.tv_nsec = 1000 * 1000};

	for (long waited_us = 0; waited_us < SCOPE_CALL_TIMEOUT_US; waited_us += 1000) {
		if (in_unit(pid, NULL, unit, NULL, 0))
			return 0;
		nanosleep(&tick, NULL);
	}
	return in_unit(pid, NULL, unit, NULL, 0) ? 0 : -ETIMEDOUT;
}

int scope_adopt(const char *service, pid_t pid, char *unit, size_t unitlen, char *err,
		size_t errlen)
{
	__attribute__((cleanup(bus_unrefp))) sd_bus *bus = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	if (sd_booted() <= 0)
		return -ENOMEDIUM;
	if (in_unit(pid, service, NULL, unit, unitlen))
		return 0; /* the restorer put the husk there already */
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
	else if ((r = await_move(pid, unit)) < 0)
		snprintf(err, errlen, "systemd made scope %s but pid %d was not in it after %d ms",
			 unit, (int)pid, SCOPE_CALL_TIMEOUT_US / 1000);
	sd_bus_error_free(&error);
	return r < 0 ? r : 0;
}
