/*
 * daemon.c - checksync-backupd as a daemon: start-up, the event loop,
 * signals, sd_notify, the status server, and an orderly stop.
 *
 * Start-up reads both kinds of configuration, loads every service's image
 * from disk and only then listens: a primary is never told "HELLO" by a
 * backup that has not yet found out which epoch it holds. READY=1 follows
 * the listener. Every failure before that is one line and exit status 1.
 *
 * Stop (SIGTERM, SIGINT): the listener and every connection go first, so
 * no new epoch arrives; then the journal writer finishes what is queued, so
 * every committed epoch is on disk when we exit 0. A restored service is
 * left running: it is not ours to stop.
 *
 * Signals are taken through libevent; SIGCHLD is left alone (child.h) and
 * SIGPIPE ignored (tls.h).
 */
#include "daemon.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "control.h"
#include "journal.h"
#include "listener.h"
#include "log.h"
#include "priority.h"
#include "restore/restore.h"
#include "service.h"
#include "peer.h"
#include "loopwatch.h"
#include "status.h"
#include "store.h"
#include "tls.h"
#include "util.h"

#define NOTIFY_INTERVAL_SEC 1

struct service *daemon_service(struct daemon *d, const char *name)
{
	for (size_t i = 0; i < d->n_services; i++)
		if (strcmp(d->services[i].cfg->name, name) == 0)
			return &d->services[i];
	return NULL;
}

/* ---------- sd_notify ---------- */

static void status_text(struct daemon *d, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = 0;
	if (d->n_services == 0)
		snprintf(buf, len, "no services configured");
	for (size_t i = 0; i < d->n_services && used + 1 < len; i++) {
		char line[256];

		service_status_line(&d->services[i], line, sizeof(line));
		used += snprintf(buf + used, len - used, "%s%s", i ? "; " : "", line);
	}
}

void daemon_status_changed(struct daemon *d)
{
	char text[sizeof(d->last_status)];

	status_text(d, text, sizeof(text));
	if (strcmp(text, d->last_status) == 0)
		return;
	snprintf(d->last_status, sizeof(d->last_status), "%s", text);
	sd_notifyf(0, "STATUS=%s", text);
}

static void on_notify_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	daemon_status_changed(arg); /* the lag moves on by itself */
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	sd_notify(0, "WATCHDOG=1");
}

static int add_timer(struct daemon *d, struct event **ev, uint64_t usec, event_callback_fn fn)
{
	struct timeval tv = {.tv_sec = usec / 1000000, .tv_usec = usec % 1000000};

	*ev = event_new(d->base, -1, EV_PERSIST, fn, d);
	return *ev && event_add(*ev, &tv) == 0 ? 0 : -ENOMEM;
}

/* WATCHDOG=1 at half systemd's interval, from the loop: a stuck loop shows. */
static int start_watchdog(struct daemon *d)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return 0;
	return add_timer(d, &d->watchdog, usec / 2, on_watchdog);
}

/* ---------- connections ---------- */

static void on_established(struct bufferevent *bev, const char *peer, void *arg)
{
	struct daemon *d = arg;

	if (!conn_policy_established(d->policy, peer)) {
		conn_policy_log(d->policy, peer, "too many connections");
		bufferevent_free(bev);
		return;
	}
	peer_accept(d, bev, peer);
}

void daemon_connection_closed(struct daemon *d, const char *peer)
{
	conn_policy_closed(d->policy, peer);
}

static void on_failed(const char *peer, const char *reason, void *arg)
{
	struct daemon *d = arg;
	conn_policy_log(d->policy, peer, reason);
}

static void on_accept_error(int err, const char *reason, void *arg)
{
	(void)err;
	on_failed("listener", reason, arg);
}

static int start_listening(struct daemon *d)
{
	struct tls_callbacks cbs = {.established = on_established,
				    .failed = on_failed,
				    .refused = on_failed,
				    .accept_error = on_accept_error,
				    .arg = d};
	char where[HOSTPORT_HOST_MAX + 16], err[512];
	int r;

	d->tls = tls_server_ctx(d->cfg.tls_ca, d->cfg.tls_cert, d->cfg.tls_key, err, sizeof(err));
	if (!d->tls) {
		log_error("%s: %s", d->cfg.path, err);
		return -EINVAL;
	}
	/* Only the configured primaries get through the handshake, let alone to HELLO. */
	for (size_t i = 0; i < d->n_services; i++)
		if (tls_ctx_expect_peer(d->tls, d->svc_cfgs[i].primary) < 0)
			return log_error_errno(-ENOMEM, "TLS peer names");
	hostport_format(&d->cfg.listen, where, sizeof(where));
	if (conn_policy_new(d->n_services, &d->policy) < 0)
		return log_error_errno(-ENOMEM, "connection limits");
	r = tls_listen(d->base, d->tls, where, &cbs, &d->listener, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		return r;
	}
	conn_policy_attach(d->policy, d->listener);
	return 0;
}

/* ---------- status ---------- */

static void fill_status(struct status_report *r, void *arg)
{
	struct daemon *d = arg;

	for (size_t i = 0; i < d->n_services; i++) {
		service_report(&d->services[i], r);
		loopwatch_report(&d->watch, r);
	}
}

static int start_status(struct daemon *d)
{
	char err[512];
	int r = status_server_new(d->base, d->cfg.status_socket, &d->cfg.metrics_listen,
				  "checksync", fill_status, d, &d->status, err, sizeof(err));

	if (r < 0)
		log_error("%s", err);
	return r;
}

/* ---------- operator commands ---------- */

static void on_command(struct control_request *req, int argc, char **argv, void *arg)
{
	struct daemon *d = arg;
	struct service *svc;

	if (strcmp(argv[0], "accept-new-incarnation") != 0) {
		control_reply(req, false, "unknown command '%s'", argv[0]);
		return;
	}
	if (argc != 2) {
		control_reply(req, false, "usage: accept-new-incarnation NAME");
		return;
	}
	svc = daemon_service(d, argv[1]);
	if (!svc) {
		control_reply(req, false, "no service '%s' here", argv[1]);
		return;
	}
	int r = service_accept_new_incarnation(svc);
	if (r < 0) {
		control_reply(req, false, "%s: cannot record the acceptance: %s", svc->cfg->name,
			      strerror(-r));
		return;
	}
	control_reply(req, true,
		      "%s: the next primary that runs another incarnation will replace the image "
		      "of epoch %" PRIu64,
		      svc->cfg->name, store_epoch(svc->store));
}

static int start_control(struct daemon *d)
{
	char err[512];
	int r = control_server_new(d->base, d->cfg.status_socket, on_command, d, &d->control, err,
				   sizeof(err));

	if (r < 0)
		log_error("%s", err);
	return r;
}

/* ---------- services ---------- */

static int open_services(struct daemon *d)
{
	int r;

	if (mkdir(d->cfg.state_dir, 0700) < 0 && errno != EEXIST)
		return log_error_errno(-errno, "cannot create the state directory %s",
				       d->cfg.state_dir);
	d->services = calloc(d->n_services + 1, sizeof(*d->services));
	if (!d->services)
		return log_error_errno(-ENOMEM, "services");
	for (size_t i = 0; i < d->n_services; i++) {
		const char *name = d->svc_cfgs[i].name;

		/* A name becomes a directory under state_dir: "." and ".." would not stay in it. */
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
			log_error("%s: the service name '%s' cannot be a directory name",
				  d->svc_cfgs[i].path, name);
			return -EINVAL;
		}
		r = service_open(d, &d->svc_cfgs[i], &d->services[i]);
		if (r < 0)
			return r;
	}
	if (d->n_services == 0)
		log_warn("no services configured in %s", d->cfg.services_dir);
	return 0;
}

/* ---------- signals ---------- */

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	(void)what;
	log_info("stopping on %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	event_base_loopbreak(d->base);
}

static int catch_signals(struct daemon *d)
{
	signal(SIGPIPE, SIG_IGN);
	d->sig_term = evsignal_new(d->base, SIGTERM, on_stop_signal, d);
	d->sig_int = evsignal_new(d->base, SIGINT, on_stop_signal, d);
	if (!d->sig_term || !d->sig_int || event_add(d->sig_term, NULL) < 0 ||
	    event_add(d->sig_int, NULL) < 0)
		return log_error_errno(-ENOMEM, "cannot catch signals");
	return 0;
}

/* ---------- start and stop ---------- */

static int load_config(struct daemon *d, const char *path)
{
	char err[CONFIG_ERR_MAX];
	int r;

	r = config_load_daemon(path, ROLE_BACKUP, &d->cfg, err, sizeof(err));
	if (r >= 0)
		r = config_load_services_dir(d->cfg.services_dir, ROLE_BACKUP, &d->svc_cfgs,
					     &d->n_services, err, sizeof(err));
	if (r >= 0)
		r = config_resolve_roles(&d->cfg, d->svc_cfgs, d->n_services, err, sizeof(err));
	if (r < 0)
		log_error("%s", err);
	return r;
}

static int start(struct daemon *d)
{
	char where[HOSTPORT_HOST_MAX + 16];
	int r;

	d->base = event_base_new();
	if (!d->base)
		return log_error_errno(-ENOMEM, "cannot create the event loop");
	d->started_us = now_us();
	(void)read_boot_id(d->boot_id, sizeof(d->boot_id));
	r = catch_signals(d);
	if (r >= 0 && (r = journal_writer_new(d->base, &d->writer)) < 0)
		log_error_errno(r, "cannot start the journal writer");
	if (r >= 0)
		r = open_services(d);
	if (r >= 0)
		r = start_listening(d);
	if (r >= 0)
		r = start_status(d);
	if (r >= 0)
		r = start_control(d);
	if (r >= 0)
		r = start_watchdog(d);
	if (r >= 0 && loopwatch_start(&d->watch, d->base) < 0)
		r = -ENOMEM;
	if (r >= 0)
		r = add_timer(d, &d->notify, NOTIFY_INTERVAL_SEC * 1000000ull, on_notify_timer);
	if (r < 0)
		return r;
	log_info("listening on %s for %zu service%s (pid %d)",
		 hostport_format(&d->cfg.listen, where, sizeof(where)), d->n_services,
		 d->n_services == 1 ? "" : "s", getpid());
	if (!restore_can_make_timens())
		log_warn("we lack CAP_SYS_ADMIN or CAP_SYS_TIME, which a takeover needs to give the "
			 "restored process its clocks: takeovers will fail (in systemd-nspawn: "
			 "--capability=CAP_SYS_TIME)");
	status_text(d, d->last_status, sizeof(d->last_status));
	sd_notifyf(0, "READY=1\nSTATUS=%s", d->last_status);
	return 0;
}

static void stop(struct daemon *d)
{
	sd_notify(0, "STOPPING=1");
	tls_listener_free(d->listener);
	peer_free_all(d);
	conn_policy_free(d->policy);
	journal_writer_free(d->writer); /* every queued epoch reaches the disk */
	status_server_free(d->status);
	control_server_free(d->control);
	loopwatch_stop(&d->watch);
	for (size_t i = 0; d->services && i < d->n_services; i++)
		service_close(&d->services[i]);
	free(d->services);
	if (d->sig_term)
		event_free(d->sig_term);
	if (d->sig_int)
		event_free(d->sig_int);
	if (d->watchdog)
		event_free(d->watchdog);
	if (d->notify)
		event_free(d->notify);
	if (d->tls)
		SSL_CTX_free(d->tls);
	if (d->base)
		event_base_free(d->base);
	config_services_free(d->svc_cfgs, d->n_services);
	config_daemon_free(&d->cfg);
}

/*
 * backupd runs BACKUPD_NICE steps ahead of the services it restores and
 * its hooks (priority.h), as primaryd does: its heartbeats renew the
 * primary's lease. With both hosts on one 2-core machine and a service
 * preloading 1 GiB, backupd at nice 0 got 1-2 ms of CPU per 100 ms of wall
 * time (primaryd is at -10): taking in one 256-page DELTA took 40-160 ms,
 * merging an epoch 200 ms for 7 ms of CPU, its heartbeats stopped and the
 * primary froze its service on the lease (tests/test_burst.py).
 */
#define BACKUPD_NICE 10

int daemon_run(const char *config_path)
{
	struct daemon d = {0};
	int nice = 0, prio = priority_run_ahead(BACKUPD_NICE, &nice);
	int r = load_config(&d, config_path);

	if (r < 0)
		return EXIT_CONFIG;
	priority_say(prio, nice, BACKUPD_NICE, "a busy CPU may delay our heartbeats");
	r = start(&d);
	if (r >= 0 && event_base_dispatch(d.base) < 0) {
		log_error("the event loop failed");
		r = -EIO;
	}
	stop(&d);
	return r < 0 ? 1 : 0;
}
