/*
 * takeover.h - failover: deciding that the primary is gone, fencing it,
 * restoring the service from the warm image and running its takeover hook.
 *
 * The decision is taken on each tick of the service's timer (every
 * heartbeat_interval_ms), from the time of the last thing heard from the
 * primary, or of the daemon's start if nothing was. Split brain is avoided
 * as DESIGN.md says: a fence hook that exits 0, or else a lease that has
 * run out (the primary freezes its service when it has not heard from us
 * for lease_ms, which is shorter than failover_timeout_ms).
 *
 * Restore runs off the event loop, in a child with a deadline
 * (restorer.h); while it runs the service is "restoring" and a primary is
 * refused. A failed or timed-out restore keeps the image and is tried
 * again after failover_timeout_ms. Hooks run asynchronously (child.h).
 */
#pragma once

struct service;

/* One tick: fence or take over if the time has come. */
void takeover_tick(struct service *svc);

/* At start, the journal said we already serve: watch that process. */
void takeover_resume(struct service *svc);
