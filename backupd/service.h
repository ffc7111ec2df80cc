/*
 * service.h - one protected service as the backup daemon sees it: its warm
 * image and journal, the primary's connection if any, what was last heard
 * from the primary, and where it stands on the way to a takeover.
 *
 * Where it stands on the way to a takeover is failover.h's state machine
 * (svc->fo), the children a takeover runs are takeover.h's (svc->to).
 * Every other field is written here, in service.c, from the events the
 * peer reports; other files only read them.
 *
 * Services live as long as the daemon; peers, hooks and journal writes
 * point at them freely.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "failover.h"
#include "goruntime.h"
#include "takeover.h"

struct child;
struct daemon;
struct event;
struct journal;
struct peer;
struct status_report;
struct store;

struct service {
	struct daemon *d;
	const struct service_config *cfg;
	char *dir; /* STATE_DIR/NAME */
	struct store *store;
	struct journal *journal;
	struct peer *peer; /* the primary's connection, once its HELLO named us */
	uint64_t attaches; /* primaries accepted so far (a takeover waiting for the key asks) */
	struct failover fo;	 /* failover.c's */
	struct takeover to;	 /* takeover.c's */
	struct event *tick;

	bool accept_new; /* an operator lets the next other incarnation replace the image */

	/* the primary */
	uint64_t last_heartbeat_us; /* its last HEARTBEAT; 0: none in this run */

	/* epochs */
	uint64_t committed_at_us; /* 0: none; after a restart, when the loaded epoch was written */
	uint64_t acked_epoch;
	uint64_t last_epoch_bytes, total_epoch_bytes, n_epochs, n_torn;

	struct go_debuginfo debuginfo; /* this host's DWARF for the executable (debuginfo.c) */
	struct witness *witness; /* the etcd witness (witness.h), NULL without one; failover.c wants */
};

/* Load the image from STATE_DIR/NAME and start the service's timer. Logs its errors. */
int service_open(struct daemon *d, const struct service_config *cfg, struct service *svc);
/* Call only once the journal writer has finished (daemon.c does). */
void service_close(struct service *svc);

/* Events from the peer (peer.c), the only writer of these fields being service.c. */
void service_attached(struct service *svc, struct peer *s);
void service_detached(struct service *svc, struct peer *s);
void service_heartbeat(struct service *svc);
void service_committed(struct service *svc, uint64_t bytes);
void service_torn(struct service *svc);
void service_acked(struct service *svc, uint64_t epoch);
/* Another incarnation's full epoch has replaced the image (leaves stood-down, ends accept_new). */
void service_replaced(struct service *svc);

/* The operator's `accept-new-incarnation NAME`: logged. */
void service_accept_new_incarnation(struct service *svc);

/* The service's rows for the status socket and /metrics. */
void service_report(const struct service *svc, struct status_report *r);
/* debuginfo.c: look up the DWARF a takeover needs; warn if there is none (peer: at HELLO). */
void service_check_debuginfo(struct service *svc, const char *peer);
/* Its path, or what is missing, for status. */
const char *service_debuginfo_text(const struct service *svc, char *buf, size_t len);

/* One phrase for sd_notify STATUS=: "epoch 42 of kvserver, lag 80 ms". */
void service_status_line(const struct service *svc, char *buf, size_t len);
