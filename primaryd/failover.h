/*
 * failover.h - the primary's side of failover as one state machine per
 * service: every state and every transition is in failover.c; guard.c
 * (timers) and link.c (the wire) only report events to it.
 *
 *   starting ──backup's HELLO──▶ protected        (a service we start)
 *      │ TAKEN_OVER
 *      ▼
 *   deposed, nothing started                      (the backup restored the last run)
 *
 *   protected ──lease lapsed──▶ frozen ──backup heard──▶ protected
 *       │                          │
 *       │ TAKEN_OVER               │ TAKEN_OVER
 *       ▼                          ▼
 *    deposed ◀──────────────── deposed: our copy is killed, never run again
 *
 * starting   a service we are to start: we ask the backup first, sending
 *            HELLO with a fresh incarnation id, and start the service
 *            only once it answers with its HELLO. If it holds the image of
 *            an earlier run (which died with the primaryd that ran it), it
 *            takes over at once and answers TAKEN_OVER instead: an empty
 *            copy never starts over the only copy of the state. While the
 *            backup cannot be reached we keep asking (every 500 ms) and
 *            start nothing: a service started then would be frozen one
 *            lease later anyway, for want of a backup to renew its lease.
 *            A service we attach to (pid_file) is running already: its
 *            incarnation is derived from the process (boot id, pid, start
 *            time), so a restarted primaryd that attaches to the same
 *            process continues the same incarnation.
 * protected  the service runs; the backup renews our lease (lease_ms).
 * frozen     the lease lapsed: the service is held stopped, because the
 *            backup may take over once our lease is over. Only HELLO, ACK
 *            and HEARTBEAT renew it (never an ERROR: a backup that is
 *            taking over must not thaw the service even for a moment).
 * deposed    the backup said (ERROR code TAKEN_OVER) that it serves.
 * handing over  a planned handover (the handover command, SIGTERM): the
 *            service is frozen as its final epoch is captured, that epoch
 *            is shipped and, once acknowledged, HANDOVER tells the backup
 *            to restore at once. Its TAKEN_OVER ends it (deposed, our
 *            frozen copy killed, the unavailability logged: from the
 *            freeze to the backup's answer); HANDOVER_FAILED thaws the
 *            service and it stays primary. A lost link leaves it frozen
 *            (the backup may be restoring): the next HELLO from the backup
 *            says it is not, and the service runs again.
 * standby    role_swap = on (config.h), and the service runs elsewhere or
 *            is to be started by the first of its hosts: nothing runs
 *            here and no link is kept. TAKEN_OVER leads here instead of to
 *            deposed. `adopt` (adopt.c: our own backupd restored the
 *            service on this host) makes us its primary: protected, but
 *            with the lease waived until a backupd answers (there is none
 *            to renew it yet, and the service must serve meanwhile).
 * stopping, stopped  `stop NAME --everywhere`: STAND_DOWN tells the backup
 *            not to take over (it keeps the image); its STOOD_DOWN answer
 *            lets us kill the service.
 *
 * The lease counts from the time the backup is known to have sent what
 * renewed it, as failover_backup_heard() is given it, never from when we
 * got round to reading it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct guard;

enum pfailover_state {
	PFAILOVER_STARTING,
	PFAILOVER_PROTECTED,
	PFAILOVER_FROZEN,
	PFAILOVER_DEPOSED,
	PFAILOVER_HANDING_OVER,
	PFAILOVER_STOPPING,
	PFAILOVER_STOPPED,
	PFAILOVER_STANDBY,
};

/* How a handover or a stop ended: ok, and a line saying what happened. */
typedef void (*pfailover_done_fn)(struct guard *g, bool ok, const char *what, void *arg);

/* Written by failover.c only. */
struct pfailover {
	enum pfailover_state state;
	uint64_t incarnation;	/* this run of the service (wire.h) */
	uint64_t lease_from_us; /* the backup renewed our lease at this time (our clock) */
	/* a handover or a stop under way */
	uint64_t frozen_at_us, acked_at_us, final_epoch;
	bool handover_sent;
	bool then_stop; /* primaryd stops after it: a failed handover leaves the service frozen */
	bool lease_waived; /* adopted, and no backupd has answered yet: nothing can renew the lease */
	/* Freezes on the lease: since when (0: not frozen), how many, the longest ended so far. */
	uint64_t lease_frozen_at_us, lease_freezes, lease_freeze_longest_us;
	bool peer_unknown_logged; /* role swap, starting: our backupd did not answer (said once) */
	pfailover_done_fn done;
	void *done_arg;
};

const char *pfailover_state_name(enum pfailover_state state);

/* Before anything: starting (a service to spawn) with a fresh incarnation id. */
void pfailover_init(struct guard *g);
/* The service is running under our guard from now: the lease starts afresh. */
void pfailover_start(struct guard *g, uint64_t now);

/* ---------- events ---------- */

/* HELLO, ACK or HEARTBEAT from the backup, which it sent at sent_us (our clock) or later. */
void pfailover_backup_heard(struct guard *g, uint64_t sent_us);
/* The longest freeze on the lease so far, one under way included. */
uint64_t pfailover_freeze_longest_us(const struct guard *g, uint64_t now);
/* The lease timer. */
void pfailover_lease_tick(struct guard *g);
/* ERROR TAKEN_OVER. */
void pfailover_deposed(struct guard *g, const char *why);
/* An ACK of epoch. */
void pfailover_acked(struct guard *g, uint64_t epoch);
/* ERROR HANDOVER_FAILED, ERROR STOOD_DOWN. */
void pfailover_handover_failed(struct guard *g, const char *why);
void pfailover_stood_down(struct guard *g, const char *why);
/* Hand over to the backup, or stop everywhere; done runs once, maybe before returning. */
void pfailover_handover(struct guard *g, pfailover_done_fn done, void *arg);
/* The same when primaryd stops after it (SIGTERM): a failed handover does not thaw the service. */
void pfailover_handover_to_stop(struct guard *g, pfailover_done_fn done, void *arg);
void pfailover_stop_everywhere(struct guard *g, pfailover_done_fn done, void *arg);
/* adopt.c has the restored service under guard (pfailover_start done): incarnation, lease waived. */
void pfailover_adopted(struct guard *g, uint64_t incarnation);
/* An adoption that could not be held: standby again, with nothing to protect. */
void pfailover_adoption_failed(struct guard *g);
/* The backup's HELLO: it accepted us; image_incarnation is what it holds. */
void pfailover_backup_hello(struct guard *g, uint64_t image_incarnation);

/* ---------- questions ---------- */

/* Deposed, stopped everywhere or standby: the service does not run here (standby: until adopted). */
bool pfailover_deposed_state(const struct guard *g);
/*
 * Until when the service may run: the backup's lease, or with on_backup_loss
 * = continue, the later of that and our lease on the witness's key (a fence
 * hook alone: for ever, the backup fences us before it restores). The lease
 * timer freezes the service after it, the lease keeper stops it after it.
 */
uint64_t pfailover_runs_until(const struct guard *g);
/* The backup's lease has lapsed but the service runs on (continue): why, for status. */
bool pfailover_backup_lost(const struct guard *g, uint64_t now);

/* May an epoch be captured and shipped now? */
bool pfailover_ships_epochs(const struct guard *g);
/* HELLO's flags: WIRE_HELLO_FRESH while the service has not started. */
uint32_t pfailover_hello_flags(const struct guard *g);
