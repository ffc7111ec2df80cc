/*
 * takeover.h - the actions of a takeover, which failover.c (the state
 * machine) decides on: run the fence hook, restore the service from the
 * warm image, run the takeover hook, and watch the restored process. Each
 * reports its end back to failover.c as an event.
 *
 * The restore is started here and reported done(pid) or failed(err) to
 * failover.c from a later turn of the loop: it runs in a child process
 * with deadlines (restorer.h), and the serving marker gets the restored
 * pid before that process may run.
 * Hooks run asynchronously (child.h).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct child;
struct restore_known;
struct handoff;
struct restorer;
struct service;

/* The children of one service's takeover; written by takeover.c only. */
struct takeover {
	struct child *fence, *hook, *watch;
	struct restorer *restorer; /* the restore under way, if any */
	/* what takeover_prepare() read ahead: the last complete result, and one being read */
	struct child *prep;
	struct restore_known *known, *reading;
	bool prep_again; /* asked again while a read was under way */
	struct handoff *handoff;   /* role swap: the restored service to our primaryd */
};

/*
 * Read ahead, in a child, what a restore would read from this host's disk:
 * the SHA-256 of the image's executable and mapped files and the runtime
 * layout from the executable's DWARF (restore.h, struct restore_known).
 * A takeover then checks only that each file is still the version read
 * (stat), instead of spending a handover's time reading them. Called when
 * a service opens with an image and at the first epoch of each session;
 * cheap when nothing changed since the last read.
 */
void takeover_prepare(struct service *svc);

/* Run the fence hook; failover_fence_done() follows. 0, or -errno (logged). */
int takeover_start_fence(struct service *svc);

/*
 * The configured executable must be the image's, by path and (with hash)
 * by SHA-256: 0, or -ESTALE (or the error reading it) with err naming both.
 * Hashing reads the whole file: the restore does it, not the event loop
 * between epochs.
 */
int takeover_check_executable(const struct service *svc, bool hash, char *err, size_t errlen);

/* Restore the warm image; failover_restore_done() or _failed() follows. */
void takeover_start_restore(struct service *svc);

/* Role swap: hand the restored pid to this host's primaryd (handoff.h). */
void takeover_hand_off(struct service *svc, pid_t pid, uint64_t epoch);

/* Run the takeover hook, if there is one, for the restored pid. */
void takeover_run_hook(struct service *svc, pid_t pid, uint64_t epoch);

/*
 * Watch the restored process; failover_service_ended() follows its end.
 * -ESRCH if it is not running (or, after a reboot, is someone else's).
 */
int takeover_watch(struct service *svc, pid_t pid);

/*
 * Stop watching and kill the hooks and a restore under way (daemon
 * shutdown); a restored service is left running.
 */
void takeover_free(struct service *svc);
