/*
 * failover.h - the backup's side of failover as one state machine per
 * service: every state and every transition is in failover.c; the other
 * files only report events to it.
 *
 *   waiting ──silent──▶ fencing ──fence done──▶ restoring ──done(pid)──▶ serving
 *      ▲  │                 │ fence failed          │ failed(err)            │
 *      │  │                 ▼                       ▼                        │ service
 *      │  └──────────── (retry after back-off) ◀────┘                        ▼ ended
 *      │                                                           serving (ended)
 *      └── stood down ◀── STAND_DOWN (the operator stopped the service everywhere)
 *
 * waiting    keeping the image; the primary may connect and stream epochs.
 *            "Silent" is decided on the timer tick (failover_tick), from
 *            the newest moment the primary is known to have been alive
 *            (failover_heard); without a fence hook only once its lease
 *            has run out too. Two events skip the silence wait: a primary
 *            that hands the service over (HANDOVER: it is frozen and its
 *            final epoch is acknowledged), and a primary that starts afresh
 *            while we hold the image of an incarnation it no longer runs
 *            (failover_take_over_now): both vouch that no copy runs on A.
 * fencing    the fence hook runs; exit 0 means the primary is stopped.
 * restoring  the warm image is being restored (takeover.c: start, then
 *            done(pid) or failed(err), maybe from a later loop turn). The
 *            "serving" marker is on disk from here on (journal.h).
 * serving    the restored process runs here; the primary is refused for good.
 * stood down the service was stopped everywhere: no takeover, image kept.
 *
 * With a witness (witness.h) every takeover, for silence or asked for,
 * first takes the service's key on etcd, which etcd gives only once the
 * primary's lease on it has expired or been revoked; until then it waits
 * (keeping the cause). While the primary is heard we hold no key.
 * Role swap (role_swap = on): a restored service is handed to this host's
 * primaryd (handoff.h), which protects it toward the next host. Once that
 * process has ended (with its guard, or deposed) this host is a backup
 * again, of whichever host serves now: waiting, but the image it restored
 * (restored_epoch of restored_incarnation, from the serving marker, kept
 * on disk until then) is never restored a second time; only a newer epoch
 * the serving host sends replaces it, and then the marker goes.
 *
 * A failed restore logs why, clears the marker, keeps the image and goes
 * back to waiting with a back-off (doubling from failover_timeout_ms up to
 * FAILOVER_MAX_BACKOFF_MS): if the primary is heard again meanwhile it
 * stays primary, else the next tick after the back-off tries again. There
 * is no "serving pid 0".
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "wire.h"

struct service;

#define FAILOVER_MAX_BACKOFF_MS 30000

enum failover_state {
	FAILOVER_WAITING,
	FAILOVER_FENCING,
	FAILOVER_RESTORING,
	FAILOVER_SERVING,
	FAILOVER_STOOD_DOWN,
};

/* Why a restore was started: decides what the primary is told afterwards. */
enum failover_cause {
	FAILOVER_SILENCE,  /* the primary went silent */
	FAILOVER_HANDOVER, /* the primary asked (HANDOVER): answer it either way */
	FAILOVER_FRESH,	   /* a fresh primary found our image of a dead incarnation */
};

/* Written by failover.c only; everyone else reads. */
struct failover {
	enum failover_state state;
	enum failover_cause cause;
	uint64_t heard_us;     /* the primary was alive at this time (our clock) or later */
	uint64_t last_tick_us; /* to notice that we ourselves stalled */
	uint64_t retry_at_us;  /* no restore before this, after a failed one */
	uint64_t quiet_until_us; /* no takeover for silence before this, after our start */
	uint32_t backoff_ms;
	unsigned failures; /* restores failed in a row */
	uint64_t restore_started_us;
	pid_t pid; /* serving: the restored process */
	uint64_t served_epoch;
	bool pid_ended;
	/* with a witness: a takeover waits for its key (cause kept), said once */
	bool key_pending;
	enum failover_cause key_cause;
	uint64_t key_attaches; /* svc->attaches then: a primary accepted since cancels the wait */
	bool key_wait_logged;
	/* role swap: the image of this epoch (of this incarnation) was restored once, never again */
	uint64_t restored_epoch, restored_incarnation;
};

const char *failover_state_name(enum failover_state state);

/* At start: a state from disk (the serving or stood-down marker), else waiting. */
void failover_init(struct service *svc, uint64_t now);

/* ---------- events ---------- */

/* The primary was alive at at_us (our clock): a message it sent, bytes of one. */
void failover_heard(struct service *svc, uint64_t at_us);
/* The service's timer (every heartbeat_interval_ms). */
void failover_tick(struct service *svc);
/* The fence hook ended: ok if it exited 0. */
void failover_fence_done(struct service *svc, bool ok);
/* The restore takeover.c started has ended. */
void failover_restore_done(struct service *svc, pid_t pid);
void failover_restore_failed(struct service *svc, int err);
/* The restored process has ended. */
void failover_service_ended(struct service *svc);
/* HANDOVER for epoch: restore now if that is the epoch we hold. */
void failover_handover(struct service *svc, uint64_t epoch);
/* A fresh primary while we hold another incarnation's image: take over now. */
void failover_take_over_now(struct service *svc, const char *why);
/* STAND_DOWN: the service is stopped everywhere. */
void failover_stand_down(struct service *svc);
/* A new incarnation's full epoch replaced the image: stood down no more, the acceptance used. */
void failover_primary_replaced(struct service *svc);
/*
 * `checksync-backupd accept-new-incarnation NAME`: the next primary of
 * another incarnation may replace the image. Kept on disk until it is used
 * (a backupd restart keeps it), logged when given and when used.
 */
int failover_accept_new_incarnation(struct service *svc);

/* ---------- questions ---------- */

/* May a primary attach now? 0, or the code to refuse it with and *why. */
enum wire_error_code failover_refuses_primary(const struct service *svc, const char **why);
/* May another incarnation's full epoch replace the image? NULL, or why it may. */
const char *failover_may_replace_image(const struct service *svc);
/* Should our heartbeats still renew the primary's lease? */
bool failover_renews_lease(const struct service *svc, uint64_t now);
/*
 * The epoch we would restore, were our primary silent long enough: the
 * image's, while we are a backup holding one that was not restored here
 * already; 0 when none. Role swap: this host's primaryd starts nothing
 * fresh while it is not 0 (primaryd/adopt.c: the run lives on, there or
 * from here).
 */
uint64_t failover_would_restore(const struct service *svc);
