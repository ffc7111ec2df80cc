/*
 * failover.h - the primary's side of failover as one state machine per
 * service: every state and every transition is in failover.c; guard.c
 * (timers) and link.c (the wire) only report events to it.
 *
 *   protected ──lease lapsed──▶ frozen ──backup heard──▶ protected
 *       │                          │
 *       │ TAKEN_OVER               │ TAKEN_OVER
 *       ▼                          ▼
 *    deposed ◀──────────────── deposed: our copy is killed, never run again
 *
 * protected  the service runs; the backup renews our lease (lease_ms).
 * frozen     the lease lapsed: the service is held stopped, because the
 *            backup may take over once our lease is over. Only HELLO, ACK
 *            and HEARTBEAT renew it (never an ERROR: a backup that is
 *            taking over must not thaw the service even for a moment).
 * deposed    the backup said (ERROR code TAKEN_OVER) that it serves.
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
	PFAILOVER_PROTECTED,
	PFAILOVER_FROZEN,
	PFAILOVER_DEPOSED,
};

/* Written by failover.c only. */
struct pfailover {
	enum pfailover_state state;
	uint64_t lease_from_us; /* the backup renewed our lease at this time (our clock) */
};

const char *pfailover_state_name(enum pfailover_state state);

/* The service is running under our guard from now: the lease starts afresh. */
void pfailover_start(struct guard *g, uint64_t now);

/* ---------- events ---------- */

/* HELLO, ACK or HEARTBEAT from the backup, which it sent at sent_us (our clock) or later. */
void pfailover_backup_heard(struct guard *g, uint64_t sent_us);
/* The lease timer. */
void pfailover_lease_tick(struct guard *g);
/* ERROR TAKEN_OVER. */
void pfailover_deposed(struct guard *g, const char *why);

/* ---------- questions ---------- */

/* May an epoch be captured and shipped now? */
bool pfailover_ships_epochs(const struct guard *g);
