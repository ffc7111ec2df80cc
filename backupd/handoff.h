/*
 * handoff.h - role swap (config.h, role_swap = on): a service this backupd
 * has restored is handed to this host's primaryd, which protects it toward
 * the next of the service's hosts (primaryd/adopt.c), so that this host
 * becomes the primary and the old primary's host, once its backupd is
 * back, the backup: no operator step.
 *
 * The hand-off is the control command `adopt NAME PID INCARNATION EPOCH`
 * on the primaryd's socket ([daemon] primaryd_socket), sent from a child
 * (it may wait while primaryd seizes the process and reads its DWARF; the
 * event loop must not). While no primaryd answers (it is restarting, or
 * not yet started) the service runs here unprotected, said once, and the
 * hand-off is tried again every second while the restored process runs.
 * A primaryd that refuses (not standby, another program) is logged with
 * its reason and not asked again.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

struct handoff;
struct service;

/* Hand the restored pid (restored from epoch) to the local primaryd; NULL if out of memory. */
struct handoff *handoff_start(struct service *svc, pid_t pid, uint64_t epoch);
/* Stop trying (the restored process ended, the daemon stops). */
void handoff_free(struct handoff *h);
