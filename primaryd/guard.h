/*
 * guard.h - one protected service inside checksync-primaryd: the process
 * under ptrace, its link to the backup, and its epochs.
 *
 * launch.c starts or attaches the process; link.c keeps the TLS connection
 * to the backup and speaks the wire protocol; guard.c runs the timers that
 * drive epochs, heartbeats and the lease.
 */
#pragma once

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "capture/incremental.h"
#include "cgroup.h"
#include "keeper.h"
#include "config.h"
#include "failover.h"
#include "link.h"
#include "wire.h"

#define PAUSE_RING 256

struct guard {
	const struct service_config *svc;
	struct event_base *base;
	SSL_CTX *tls;
	pid_t pid;
	bool adopted; /* adopt.c: pid is a restored process handed to us, not our child */
	struct capture_session *sess;

	struct link link; /* link.c's */

	/* epochs */
	uint64_t epoch, sent, acked;
	bool sent_captured; /* this run captured epoch `sent` (else adopted at it): resume.c */
	uint64_t acked_at_us;
	bool need_full;
	struct pfailover fo; /* failover.c's */
	bool ended;   /* the service died: no more epochs, no link (the backup takes over) */
	int end_status; /* its wait status, -1 when a capture's waitpid took it */
	int pidfd;      /* the service's: readable once it has ended, whoever reaped it */

	/* protection, as an operator sees it (guard_protection) */
	char capture_err[256]; /* why the last epoch could not be captured, "" when it was */
	char unprotected[256]; /* the reason last logged, "" while protected */
	bool first_ack_logged;
	bool stopping; /* guard_stop(): no reconnect */

	/* the lease keeper (keeper.h) and our own last lease tick, to see that we stalled */
	struct keeper keeper;
	uint64_t last_tick_us;
	uint64_t last_heard_us; /* the backup renewed the lease (our clock, when we read it) */
	uint64_t merged; /* epochs skipped while the backup caught up */
	bool epoch_owed; /* a tick found the last epoch still being queued: it goes when that is done (link.c) */
	uint64_t resumed; /* reconnects that went on from the backup's epoch (resume.c) */

	/* figures for status */
	uint64_t pauses[PAUSE_RING];
	size_t n_pauses;
	uint64_t epochs_sent;
	uint64_t full_pause_us; /* the stop of the last full epoch */
	const char *last_mode;
	unsigned safepoint_retries, fallbacks;

	struct event *epoch_ev, *hb_ev, *lease_ev, *exit_ev;
	struct outcommit *oc; /* output_commit = on: outcommit.c */
	struct service_cgroup cgroup; /* output_commit = on: the service's (cgroup.h) */
	struct event *precopy_ev; /* the next piece of a pre-copy round (precopy.c) */
	/* The next step of the work after an epoch's resume (the reach scan), and its epoch's kind. */
	struct event *after_ev;
	struct event *lease_again_ev; /* the lease judged again after a read (guard_lease_judge_later) */
	uint64_t lease_put_off_us;    /* when the judgement was first put off (0: it is not) */
	bool after_full;
	bool after_link_lost; /* the link went meanwhile: the epoch is for a backup no longer there */
	struct witness *witness; /* the etcd witness (witness.h), NULL without one */
};

/* launch.c */
int service_spawn(const struct service_config *svc, pid_t *pid);
/* The same, the service put in cg (NULL: left in ours) before it execs. */
int service_spawn_in(const struct service_config *svc, const struct service_cgroup *cg,
		     pid_t *pid);
int service_attach_pidfile(const struct service_config *svc, pid_t *pid);

/* precopy.c: rounds before the epoch's stop; false when this service does not pre-copy */
bool guard_precopy_tick(struct guard *g);

/*
 * resume.c: after a reconnect, whether the next epoch may be a delta on the
 * epoch the backup's HELLO says it holds (else a full one); logs which.
 */
bool guard_may_resume(struct guard *g, const struct wire_hello *h);

/* adopt.c: the `adopt NAME PID INCARNATION EPOCH` command; 0, or -errno with why in err. */
int guard_adopt(struct guard *g, pid_t pid, uint64_t incarnation, uint64_t epoch, char *err,
		size_t errlen);
/* adopt.c: role swap, before a fresh start: does the run live on (our backupd says)? */
enum peer_answer { PEER_RUNS_NOWHERE, PEER_SERVES, PEER_UNKNOWN };
enum peer_answer guard_peer_serves(const struct guard *g, char *why, size_t whylen);

/* guard.c */
/* A guard for svc, not started. */
void guard_init(struct guard *g, const struct service_config *svc, struct event_base *base,
		SSL_CTX *tls);
int guard_start(struct guard *g);
/* The backup can take another epoch now (else the epoch merges into the next, counted). */
bool guard_epoch_may_ship(struct guard *g);
int guard_start_service(struct guard *g);
/*
 * Guard pid, restored here and not our child, as if we had started it; its
 * epochs go on after epoch. On failure nothing is held and it runs on.
 */
int guard_hold_adopted(struct guard *g, pid_t pid, uint64_t epoch);
int guard_ship_epoch(struct guard *g, bool hold);
/* An epoch's work after its resume (the reach scan) is still under way, in steps. */
bool guard_after_pending(const struct guard *g);
/*
 * Judge the lease again once the loop has read what waits (a zero timer),
 * unless it has been put off for a heartbeat interval already: false then.
 */
bool guard_lease_judge_later(struct guard *g, uint64_t now);
/*
 * Events from link.c, which writes only g->link: what they change in the
 * rest of the guard is written here (and in failover.c, g->fo).
 */
/* The backup's HELLO h accepted us (h->incarnation: what its image holds, 0 none). */
void guard_backup_hello(struct guard *g, const struct wire_hello *h);
/* The backup renewed our lease: it sent what we read at sent_us (our clock) or later. */
void guard_backup_heard(struct guard *g, uint64_t sent_us);
/* The backup acknowledged epoch (durable there). */
void guard_acked(struct guard *g, uint64_t epoch);
/* The link is down (or never came up): the next epoch is full; reconnect unless stopping. */
void guard_link_lost(struct guard *g);
/* Stop its timers and link, kill the service (it stops with us), free everything. */
void guard_stop(struct guard *g);
/* A wait status for one of the service's threads (pid), from the daemon's reaper. */
void guard_on_wait(struct guard *g, pid_t pid, int status);
/* The lease keeper (g->keeper.pid) has ended with this wait status. */
void guard_keeper_ended(struct guard *g, int status);
/*
 * Whether the backup holds a recent acknowledged epoch of the service: 0
 * when it does, else a code (enum unprotected_reason) with why in buf.
 */
enum unprotected_reason {
	UNPROT_NONE,
	UNPROT_NOT_CONNECTED,
	UNPROT_NO_ACK,
	UNPROT_CAPTURE,
	UNPROT_FROZEN,
	UNPROT_ENDED,
	UNPROT_DEPOSED,
	UNPROT_NOT_STARTED,
	UNPROT_BACKUP_LOST, /* serving on without the backup (on_backup_loss = continue) */
	UNPROT_STANDBY, /* role swap: nothing runs here to protect */
};
int guard_protection(const struct guard *g, char *buf, size_t len);
/* Once the service is dead: what it sent for unacknowledged epochs is dropped (outcommit.c). */
void guard_stop_output(struct guard *g);
struct status_report;
void guard_status_fill(const struct guard *g, struct status_report *r);
