/*
 * cgroup.h - the service's own cgroup (v2), by which output commit knows
 * its packets (outcommit.c: iptables' cgroup match).
 *
 * A socket belongs to the cgroup of the process that created it, and a
 * connection accepted on it to the listener's: so every packet of the
 * service, on a port it listens on, bound later or dialled out, matches,
 * and nothing of any other program's (primaryd's own link to the backup,
 * a client on the same host) does.
 *
 * A service primaryd starts is put in checksync-NAME-PID (PID: primaryd's),
 * a child of primaryd's own cgroup, before it execs. One backupd restores
 * where there is no systemd scope gets checksync-NAME-PID beside backupd
 * (PID: its restorer's) before the restore makes its sockets
 * (backupd/restorer.c). One primaryd attaches to or adopts keeps the
 * cgroup it has, which must then be its own: not primaryd's, nor one that
 * holds primaryd. Both daemons use this file (common/).
 */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

struct service_cgroup {
	char path[PATH_MAX]; /* in the cgroup v2 hierarchy: "/a/b" */
	char dir[PATH_MAX];  /* where that is mounted here */
	bool made;	     /* ours: removed by service_cgroup_remove() */
};

/* A new cgroup for the service NAME; 0, or -errno with why in err. */
int service_cgroup_make(const char *name, struct service_cgroup *cg, char *err, size_t errlen);
/* The cgroup pid is in, which must not hold the caller (primaryd); 0, or -errno with why in err. */
int service_cgroup_of(pid_t pid, struct service_cgroup *cg, char *err, size_t errlen);
/* Move pid into it. */
int service_cgroup_enter(const struct service_cgroup *cg, pid_t pid);
/* Remove one we made (once the service is gone). */
void service_cgroup_remove(struct service_cgroup *cg);
