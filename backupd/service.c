/*
 * service.c - see service.h: opening a service's image, its timer, and the
 * figures it reports.
 */
#include "service.h"

#include <event2/event.h>
#include <inttypes.h>
#include <math.h>

#include "child.h"
#include "daemon.h"
#include "journal.h"
#include "log.h"
#include "peer.h"
#include "status.h"
#include "store.h"
#include "takeover.h"
#include "util.h"
#include "witness.h"

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	failover_tick(arg);
}

static int start_tick(struct service *svc)
{
	uint32_t ms = svc->cfg->heartbeat_interval_ms;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = ms % 1000 * 1000};

	svc->tick = event_new(svc->d->base, -1, EV_PERSIST, on_tick, svc);
	if (!svc->tick)
		return -ENOMEM;
	return event_add(svc->tick, &tv) == 0 ? 0 : -ENOMEM;
}

/*
 * Our name on the witness's key: the backup's certificate name, else the host's.
 * With role swap backup_name is the *peer's* name (config.h: the next host),
 * so it would be the name the peer's primaryd holds the key under, and etcd's
 * "value is ours" branch would give us a key the live peer holds. Both of a
 * host's daemons use this host's own name (the primaryd's primary, 18c5bb3):
 * the key passes from our backupd to our primaryd on adopt.
 */
static int open_witness(struct service *svc)
{
	char host[256] = "";
	const char *me = svc->cfg->role_swap ? svc->d->cfg.host_name : svc->cfg->backup_name;
	struct witness_tls tls = {svc->cfg->witness_ca, svc->cfg->witness_cert, svc->cfg->witness_key};
	int r;

	if (!svc->cfg->witness.n)
		return 0;
	if (!me) {
		(void)gethostname(host, sizeof(host) - 1);
		me = host;
	}
	r = witness_new(svc->d->base, &svc->cfg->witness, svc->cfg->name, me,
			svc->cfg->witness_ttl_ms, svc->cfg->heartbeat_interval_ms, &tls, NULL, NULL,
			&svc->witness);
	return r < 0 ? log_error_errno(r, "%s: cannot set up the witness", svc->cfg->name) : 0;
}

int service_open(struct daemon *d, const struct service_config *cfg, struct service *svc)
{
	int r;

	*svc = (struct service){.d = d, .cfg = cfg};
	r = open_witness(svc);
	if (r < 0)
		return r;
	if (asprintf(&svc->dir, "%s/%s", d->cfg.state_dir, cfg->name) < 0) {
		svc->dir = NULL;
		return log_error_errno(-ENOMEM, "%s", cfg->name);
	}
	r = journal_open(d->writer, svc->dir, cfg->name, &svc->journal, &svc->store);
	if (r < 0)
		return r;
	svc->acked_epoch = journal_durable_epoch(svc->journal); /* an ACK follows durability */
	if (store_epoch(svc->store)) {
		/* Lag goes on from the epoch's write, not from our start. */
		uint64_t age = journal_loaded_age_us(svc->journal);
		svc->committed_at_us = age < d->started_us ? d->started_us - age : 1;
		log_info("%s: image of epoch %" PRIu64 " loaded from %s (%" PRIu64 " pages)",
			 cfg->name, store_epoch(svc->store), svc->dir, store_npages(svc->store));
	} else {
		log_info("%s: no image yet in %s", cfg->name, svc->dir);
	}
	service_check_debuginfo(svc, NULL);
	failover_init(svc, d->started_us);
	r = start_tick(svc);
	return r < 0 ? log_error_errno(r, "%s: cannot start its timer", cfg->name) : 0;
}

void service_close(struct service *svc)
{
	if (svc->tick)
		event_free(svc->tick);
	witness_free(svc->witness);
	takeover_free(svc);
	if (svc->journal)
		journal_free(svc->journal);
	if (svc->store)
		store_free(svc->store);
	free(svc->dir);
	*svc = (struct service){0};
}

void service_attached(struct service *svc, struct peer *s)
{
	svc->peer = s;
	svc->attaches++;
	failover_heard(svc, now_us());
	daemon_status_changed(svc->d);
}

void service_detached(struct service *svc, struct peer *s)
{
	if (svc->peer != s)
		return;
	svc->peer = NULL;
	daemon_status_changed(svc->d);
}

void service_heartbeat(struct service *svc) { svc->last_heartbeat_us = now_us(); }

void service_committed(struct service *svc, uint64_t bytes)
{
	svc->committed_at_us = now_us();
	svc->last_epoch_bytes = bytes;
	svc->total_epoch_bytes += bytes;
	svc->n_epochs++;
}

void service_torn(struct service *svc) { svc->n_torn++; }

void service_acked(struct service *svc, uint64_t epoch) { svc->acked_epoch = epoch; }

void service_replaced(struct service *svc) { failover_primary_replaced(svc); }

int service_accept_new_incarnation(struct service *svc)
{
	return failover_accept_new_incarnation(svc);
}

static double age_seconds(uint64_t then_us, uint64_t now)
{
	return then_us ? (double)(now - then_us) / 1e6 : NAN;
}

void service_report(const struct service *svc, struct status_report *r)
{
	uint64_t now = now_us(), epoch = store_epoch(svc->store);
	const struct failover *fo = &svc->fo;
	bool serving = fo->state == FAILOVER_SERVING;

	status_report_service(r, svc->cfg->name, failover_state_name(fo->state));
	status_report_gauge(r, "epoch", "", epoch, "Last committed epoch of the warm image");
	status_report_gauge(r, "acked_epoch", "", svc->acked_epoch,
			    "Last epoch acknowledged to the primary (durable on disk)");
	status_report_gauge(r, "durable_epoch", "", journal_durable_epoch(svc->journal),
			    "Newest epoch on disk");
	status_report_gauge(r, "lag", "seconds", age_seconds(svc->committed_at_us, now),
			    "Time since the last epoch was committed");
	status_report_gauge(r, "epoch_size", "bytes", svc->n_epochs ? svc->last_epoch_bytes : NAN,
			    "Size of the last epoch as received");
	status_report_gauge(r, "epoch_size_mean", "bytes",
			    svc->n_epochs ? (double)svc->total_epoch_bytes / svc->n_epochs : NAN,
			    "Mean size of the epochs received since the daemon started");
	status_report_gauge(r, "heartbeat_age", "seconds", age_seconds(svc->last_heartbeat_us, now),
			    "Time since the last heartbeat from the primary");
	status_report_gauge(r, "heard_age", "seconds",
			    fo->heard_us < now ? age_seconds(fo->heard_us, now) : 0,
			    "Time since anything was heard from the primary (failover clock)");
	status_report_gauge(r, "connected", "", svc->peer != NULL,
			    "1 while the primary is connected");
	status_report_gauge(r, "image_pages", "", store_npages(svc->store),
			    "Pages held in the warm image");
	uint64_t rx_epoch, rx_pages;
	bool rx = peer_receiving(svc->peer, &rx_epoch, &rx_pages);
	status_report_gauge(r, "receiving_epoch", "", rx ? rx_epoch : NAN,
			    "Epoch begun and not yet committed (torn if the primary goes now)");
	status_report_gauge(r, "receiving_pages", "", rx ? rx_pages : NAN,
			    "Pages of that epoch received so far");
	status_report_gauge(r, "disk", "bytes", journal_disk_bytes(svc->journal),
			    "Bytes of the files the image is kept in");
	status_report_counter(r, "epochs", "", svc->n_epochs,
			      "Epochs committed since the daemon started");
	status_report_counter(r, "torn_epochs", "", svc->n_torn,
			      "Epochs discarded before their commit since the daemon started");
	status_report_gauge(r, "restores_failed", "", fo->failures,
			      "Restores failed in a row (the image is kept; retried after a back-off)");
	status_report_gauge(r, "pid", "", serving && fo->pid > 0 && !fo->pid_ended ? fo->pid : NAN,
			    "Process id of the service restored here");
	status_report_gauge(r, "restored_once", "", fo->restored_epoch ? fo->restored_epoch : NAN,
			    "Role swap: the epoch restored here whose copy has ended; it is not "
			    "restored again, a newer epoch from the serving host clears it");
	uint64_t would = failover_would_restore(svc);
	status_report_gauge(r, "would_restore", "", would ? would : NAN,
			    "The epoch this backup would restore were its primary silent (an image "
			    "not restored here already); none while it serves, stood down or empty");
	char di[512];
	status_report_text(r, "debug_info", service_debuginfo_text(svc, di, sizeof(di)),
			   "The executable's DWARF on this host, which a takeover patches thread "
			   "ids with");
	if (svc->witness) {
		char wtext[300];
		snprintf(wtext, sizeof(wtext), "%s%s%s%s%s",
			 witness_holds(svc->witness, now) ? "held" : "not held",
			 witness_holder(svc->witness)[0] ? ": held by " : "", witness_holder(svc->witness),
			 witness_error(svc->witness)[0] ? "; " : "", witness_error(svc->witness));
		status_report_gauge(r, "witness_held", "", witness_holds(svc->witness, now),
				    "1 while this host holds the service's key on the etcd witness");
		status_report_text(r, "witness", wtext, "The etcd witness's key, as this host sees it");
	}
	store_report(svc->store, r);
	journal_report(svc->journal, r);
}

void service_status_line(const struct service *svc, char *buf, size_t len)
{
	uint64_t epoch = store_epoch(svc->store);

	const struct failover *fo = &svc->fo;

	if (fo->state == FAILOVER_SERVING)
		snprintf(buf, len, "serving %s as pid %d%s", svc->cfg->name, fo->pid,
			 fo->pid_ended ? " (ended)" : "");
	else if (fo->state == FAILOVER_FENCING)
		snprintf(buf, len, "fencing the primary of %s", svc->cfg->name);
	else if (fo->state == FAILOVER_RESTORING)
		snprintf(buf, len, "restoring %s from epoch %" PRIu64, svc->cfg->name, epoch);
	else if (fo->state == FAILOVER_STOOD_DOWN)
		snprintf(buf, len, "%s stopped everywhere (image of epoch %" PRIu64 " kept)",
			 svc->cfg->name, epoch);
	else if (!epoch)
		snprintf(buf, len, "waiting for %s's primary", svc->cfg->name);
	else
		snprintf(buf, len, "epoch %" PRIu64 " of %s, lag %" PRIu64 " ms", epoch,
			 svc->cfg->name, (now_us() - svc->committed_at_us) / 1000);
}
