/*
 * service.h - one protected service as the backup daemon sees it: its warm
 * image and journal, the primary's connection if any, what was last heard
 * from the primary, and where it stands on the way to a takeover.
 *
 * A service is in one of three states:
 *   backup   - keeping the image; the primary may connect and stream epochs
 *   fencing  - the primary went silent and the fence hook is running
 *   restoring - the takeover's restore runs in a child (restorer.h)
 *   serving  - we restored the service here; a primary is refused for good
 * "serving" is kept on disk (journal.h), so it survives our own restart.
 *
 * Services live as long as the daemon; sessions, hooks and journal writes
 * point at them freely.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"

struct child;
struct restorer;
struct daemon;
struct event;
struct journal;
struct session;
struct status_report;
struct store;

enum service_state {
	SERVICE_BACKUP,
	SERVICE_FENCING,
	SERVICE_SERVING,
	SERVICE_RESTORING, /* the takeover's restore runs (restorer.h) */
};

struct service {
	struct daemon *d;
	const struct service_config *cfg;
	char *dir; /* STATE_DIR/NAME */
	struct store *store;
	struct journal *journal;
	struct session *session; /* the primary's connection, once its HELLO named us */
	enum service_state state;

	/* the primary */
	uint64_t last_heard_us;	    /* anything from it; the daemon's start before that */
	uint64_t last_heartbeat_us; /* its last HEARTBEAT; 0: none in this run */

	/* epochs */
	uint64_t committed_at_us; /* 0: none; after a restart, when the loaded epoch was written */
	uint64_t acked_epoch;
	uint64_t last_epoch_bytes, total_epoch_bytes, n_epochs, n_torn;

	/* takeover (takeover.c) */
	pid_t pid;
	uint64_t served_epoch;
	bool pid_ended;
	uint64_t retry_at_us;
	struct child *fence, *hook, *watch;
	struct restorer *restorer;		   /* the restore under way, if any */
	uint64_t takeover_started_us, takeover_epoch; /* of the restore under way */
	struct event *tick;
};

const char *service_state_name(enum service_state state);

/* Load the image from STATE_DIR/NAME and start the service's timer. Logs its errors. */
int service_open(struct daemon *d, const struct service_config *cfg, struct service *svc);
/* Call only once the journal writer has finished (daemon.c does). */
void service_close(struct service *svc);

/* Something came from the primary. */
void service_heard(struct service *svc);

/* The service's rows for the status socket and /metrics. */
void service_report(const struct service *svc, struct status_report *r);
/* One phrase for sd_notify STATUS=: "epoch 42 of kvserver, lag 80 ms". */
void service_status_line(const struct service *svc, char *buf, size_t len);
