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
#include "keeper.h"
#include "config.h"
#include "failover.h"
#include "sendq.h"
#include "wire.h"

#define PAUSE_RING 256

struct guard {
	const struct service_config *svc;
	struct event_base *base;
	SSL_CTX *tls;
	pid_t pid;
	bool adopted; /* adopt.c: pid is a restored process handed to us, not our child */
	struct capture_session *sess;

	/* link */
	struct bufferevent *bev;
	struct tls_handshake *hs;
	struct wire_decoder *dec;
	bool hello_ok;
	bool backup_no_dwarf; /* its HELLO said its host has no DWARF for the service */
	char peer[128];

	/* epochs */
	uint64_t epoch, sent, acked;
	uint64_t acked_at_us;
	bool need_full;
	bool deposed;	     /* the backup has taken over: never run again (set by failover.c) */
	struct pfailover fo; /* failover.c's */
	uint64_t incarnation; /* this run of the service (wire.h), set by failover.c */
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
	uint64_t last_heard_us, last_hb_sent_us, hb_seq;
	uint64_t hello_sent_us;			  /* our HELLO: the backup's answers it */
	uint64_t peer_stamp_us, peer_stamp_at_us; /* the backup's newest time_us, and when it came */
	/* when our newest heartbeat left the output buffer (link.c: its stamp renews the lease) */
	uint64_t out_added, out_drained; /* bytes through the output buffer */
	uint64_t hb_stamp, hb_end;	 /* the heartbeat queued last, and where it ends */
	uint64_t hb_left_stamp, hb_left_us; /* the heartbeat that left last, and when */
	uint64_t merged; /* epochs skipped while the backup caught up */
	uint64_t resumed; /* reconnects that went on from the backup's epoch (resume.c) */
	struct sendq sendq; /* epoch data not yet handed to the bufferevent (sendq.h) */
	struct link_epoch *sending; /* the epoch whose pages are being queued (link.c) */
	uint64_t epoch_bytes_from;

	/* figures for status */
	uint64_t pauses[PAUSE_RING];
	size_t n_pauses;
	uint64_t last_bytes, total_bytes, epochs_sent;
	uint64_t full_pause_us; /* the stop of the last full epoch */
	const char *last_mode;
	unsigned safepoint_retries, fallbacks;

	struct event *epoch_ev, *hb_ev, *lease_ev, *reconnect_ev, *exit_ev;
	struct outcommit *oc; /* output_commit = on: outcommit.c */
	struct event *precopy_ev; /* the next piece of a pre-copy round (precopy.c) */
	struct witness *witness; /* the etcd witness (witness.h), NULL without one */
};

/* launch.c */
int service_spawn(const struct service_config *svc, pid_t *pid);
int service_attach_pidfile(const struct service_config *svc, pid_t *pid);

/* link.c */
void link_connect(struct guard *g);
void link_schedule_reconnect(struct guard *g);
void link_send_heartbeat(struct guard *g);
/* Takes img, and queues its pages slice by slice from the loop; link_busy() until done. */
int link_send_epoch(struct guard *g, struct image *img, uint64_t epoch, uint64_t base);
bool link_busy(const struct guard *g);
/* Queue the rest of the epoch in flight now, on the spot (a final epoch must follow it). */
void link_finish_epoch(struct guard *g);
size_t link_backlog(const struct guard *g);
int link_send_handover(struct guard *g, uint64_t epoch);
int link_send_stand_down(struct guard *g);
/* Close the link (or cancel its handshake) and any reconnect timer. */
void link_close(struct guard *g, const char *why);
/* Drop the link when the backup has been silent for failover_timeout_ms (link.c). */
void link_drop_if_silent(struct guard *g, uint64_t now);

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
/* adopt.c: role swap, before a fresh start: is the peer's primaryd replicating to our backupd? */
bool guard_peer_serves(const struct guard *g);

/* guard.c */
int guard_start(struct guard *g);
/* The backup can take another epoch now (else the epoch merges into the next, counted). */
bool guard_epoch_may_ship(struct guard *g);
int guard_start_service(struct guard *g);
int guard_ship_epoch(struct guard *g, bool hold);
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
