/*
 * scope.h - a restored service becomes a unit of its own on this host.
 *
 * A process the backup restores starts as its child, in the cgroup of
 * checksync-backup.service, where systemd would count it as part of the
 * daemon (a restart of the daemon then finds a "left-over process"). As
 * soon as its husk is forked, before it runs anything (restorer.c), the
 * backup asks systemd for a transient scope, checksync-NAME.scope, holding
 * it: `systemctl status`, `systemctl stop`, `journalctl -u` and resource
 * limits then work on the service as on any other unit.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/*
 * Move pid into a new transient scope checksync-SERVICE.scope (or
 * checksync-SERVICE-PID.scope when that name is taken, by an earlier run
 * not yet gone), and wait until it is there. A pid in such a scope already
 * stays there. Returns 0 and the unit's name in unit, -ENOMEDIUM when
 * this host does not run systemd (nothing to do), or a negative errno
 * with err saying why.
 */
int scope_adopt(const char *service, pid_t pid, char *unit, size_t unitlen, char *err,
		size_t errlen);
