/*
 * guard.h - one protected service inside checksync-primaryd: the process
 * under ptrace, its link to the backup, and its epochs.
 *
 * service.c starts or attaches the process; link.c keeps the TLS connection
 * to the backup and speaks the wire protocol; guard.c runs the timers that
 * drive epochs, heartbeats and the lease.
 */
#pragma once

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "capture/session.h"
#include "config.h"
#include "failover.h"
#include "wire.h"

#define PAUSE_RING 256

struct guard {
	const struct service_config *svc;
	struct event_base *base;
	SSL_CTX *tls;
	pid_t pid;
	struct capture_session *sess;

	/* link */
	struct bufferevent *bev;
	struct tls_handshake *hs;
	struct wire_decoder *dec;
	bool hello_ok;
	char peer[128];

	/* epochs */
	uint64_t epoch, sent, acked;
	uint64_t acked_at_us;
	bool need_full;
	bool deposed;	     /* the backup has taken over: never run again (set by failover.c) */
	struct pfailover fo; /* failover.c's */
	uint64_t incarnation; /* this run of the service (wire.h), set by failover.c */
	uint64_t last_heard_us, last_hb_sent_us, hb_seq;
	uint64_t hello_sent_us;			  /* our HELLO: the backup's answers it */
	uint64_t peer_stamp_us, peer_stamp_at_us; /* the backup's newest time_us, and when it came */
	uint64_t merged; /* epochs skipped while the backup caught up */

	/* figures for status */
	uint64_t pauses[PAUSE_RING];
	size_t n_pauses;
	uint64_t last_bytes, total_bytes, epochs_sent;
	const char *last_mode;
	unsigned safepoint_retries, fallbacks;

	struct event *epoch_ev, *hb_ev, *lease_ev, *reconnect_ev;
	struct outcommit *oc; /* output_commit = on: outcommit.c */
};

/* service.c */
int service_spawn(const struct service_config *svc, pid_t *pid);
int service_attach_pidfile(const struct service_config *svc, pid_t *pid);

/* link.c */
void link_connect(struct guard *g);
void link_schedule_reconnect(struct guard *g);
void link_send_heartbeat(struct guard *g);
int link_send_epoch(struct guard *g, const struct image *img, uint64_t epoch, uint64_t base);
size_t link_backlog(const struct guard *g);
int link_send_handover(struct guard *g, uint64_t epoch);
int link_send_stand_down(struct guard *g);

/* guard.c */
int guard_start(struct guard *g);
int guard_start_service(struct guard *g);
int guard_ship_epoch(struct guard *g, bool hold);
void guard_link_lost(struct guard *g);
void guard_stop_output(struct guard *g);
struct status_report;
void guard_status_fill(const struct guard *g, struct status_report *r);
