/*
 * daemon.c - `checksync-primaryd [--config FILE]`: guard every service in
 * services_dir and replicate it to its backup, until told to stop.
 *
 * Stopping primaryd (or its death) kills the services it guards: they are
 * held with PTRACE_O_EXITKILL, and a service left running unguarded would
 * be served twice once the backup takes over.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <signal.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>

#include "control.h"
#include "daemon.h"
#include "guard.h"
#include "log.h"
#include "loopwatch.h"
#include "priority.h"
#include "status.h"
#include "tls.h"
#include "util.h"

struct primary {
	struct daemon_config cfg;
	struct service_config *svcs;
	size_t n_svcs;
	struct guard *guards;
	struct event_base *base;
	SSL_CTX *tls;
	struct status_server *status;
	struct control_server *control;
	size_t handovers_pending; /* SIGTERM: services still being handed over */
	struct event *sig_chld, *sig_term, *sig_int, *notify;
	struct loopwatch watch; /* how long the loop was held (loopwatch.h) */
	uint64_t watchdog_us;
	int exit_code;
};

/*
 * The daemon's one reaper: every wait status (a service's exit, a ptrace
 * stop of one of its threads) goes to the guard that owns the thread, so
 * no service can swallow another's events; a tracee nobody owns is let run.
 */
static void on_sigchld(evutil_socket_t fd, short what, void *arg)
{
	struct primary *p = arg;
	int st;
	pid_t pid;
	(void)fd;
	(void)what;
	while ((pid = waitpid(-1, &st, WNOHANG | __WALL)) > 0) {
		struct guard *owner = NULL;
		for (size_t i = 0; i < p->n_svcs && !owner; i++) {
			struct guard *g = &p->guards[i];
			if (g->keeper.pid == pid) {
				guard_keeper_ended(g, st);
				break;
			}
			if (g->pid == pid || (g->sess && capture_session_owns(g->sess, pid)))
				owner = g;
		}
		if (owner)
			guard_on_wait(owner, pid, st);
		else
			capture_session_on_wait(NULL, pid, st);
	}
}

/* ---------- planned stop: hand every service over, then exit ---------- */

static void on_stop_handed_over(struct guard *g, bool ok, const char *what, void *arg)
{
	struct primary *p = arg;

	(void)g;
	if (!ok)
		log_warn("%s; it stops with us", what);
	if (--p->handovers_pending == 0) {
		log_info("stopping: every service is handed over or stops with us");
		event_base_loopexit(p->base, NULL);
	}
}

/*
 * SIGTERM (what `systemctl stop` sends) hands each service over to its
 * backup (failover.h): zero loss and no failover timeout. A service that
 * cannot be handed over (no backup connected) stops with us, as before.
 */
static void primary_stop_by_handover(struct primary *p)
{
	if (p->handovers_pending)
		return; /* a second SIGTERM while the first is under way */
	log_info("stopping: handing the services over to their backups");
	p->handovers_pending = p->n_svcs + 1;
	for (size_t i = 0; i < p->n_svcs; i++)
		pfailover_handover_to_stop(&p->guards[i], on_stop_handed_over, p);
	on_stop_handed_over(NULL, true, "", p);
}

static void on_sigterm(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	primary_stop_by_handover(arg);
}

/* ---------- operator commands ---------- */

static void on_command_done(struct guard *g, bool ok, const char *what, void *arg)
{
	(void)g;
	control_reply(arg, ok, "%s", what);
}

static struct guard *guard_named(struct primary *p, const char *name)
{
	for (size_t i = 0; i < p->n_svcs; i++)
		if (strcmp(p->guards[i].svc->name, name) == 0)
			return &p->guards[i];
	return NULL;
}

/* `adopt NAME PID INCARNATION EPOCH`, from this host's backupd (role swap, adopt.c). */
static void on_adopt(struct primary *p, struct control_request *req, int argc, char **argv)
{
	struct guard *g = argc == 5 ? guard_named(p, argv[1]) : NULL;
	char err[512], *e1, *e2, *e3;
	long pid = argc == 5 ? strtol(argv[2], &e1, 10) : 0;
	uint64_t inc = argc == 5 ? strtoull(argv[3], &e2, 16) : 0;
	uint64_t epoch = argc == 5 ? strtoull(argv[4], &e3, 10) : 0;

	if (argc != 5 || *e1 || *e2 || *e3) {
		control_reply(req, false, "usage: adopt NAME PID INCARNATION(hex) EPOCH");
		return;
	}
	if (!g) {
		control_reply(req, false, "no service '%s' here", argv[1]);
		return;
	}
	if (guard_adopt(g, (pid_t)pid, inc, epoch, err, sizeof(err)) < 0) {
		log_warn("%s", err);
		control_reply(req, false, "%s", err);
		return;
	}
	control_reply(req, true, "%s: adopted pid %ld at epoch %" PRIu64 "; protecting it toward %s",
		      g->svc->name, pid, epoch, g->svc->backup_name);
}

static void on_command(struct control_request *req, int argc, char **argv, void *arg)
{
	struct primary *p = arg;
	bool handover = strcmp(argv[0], "handover") == 0, stop = strcmp(argv[0], "stop") == 0;
	struct guard *g = NULL;

	if (strcmp(argv[0], "adopt") == 0) {
		on_adopt(p, req, argc, argv);
		return;
	}
	if (!handover && !stop) {
		control_reply(req, false, "unknown command '%s'", argv[0]);
		return;
	}
	if (argc != (handover ? 2 : 3) || (stop && strcmp(argv[2], "--everywhere") != 0)) {
		control_reply(req, false, "usage: handover NAME | stop NAME --everywhere");
		return;
	}
	for (size_t i = 0; i < p->n_svcs; i++)
		if (strcmp(p->guards[i].svc->name, argv[1]) == 0)
			g = &p->guards[i];
	if (!g) {
		control_reply(req, false, "no service '%s' here", argv[1]);
		return;
	}
	if (handover)
		pfailover_handover(g, on_command_done, req);
	else
		pfailover_stop_everywhere(g, on_command_done, req);
}

/*
 * STATUS= for systemd: UNPROTECTED first, with the reason of each service
 * the backup could not take over from a recent epoch; never "connected"
 * for a service that nothing protects.
 */
static void notify_status(struct primary *p)
{
	char line[1024], why[256];
	size_t n = 0;
	bool any = false;

	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < p->n_svcs && n < sizeof(line); i++) {
			const struct guard *g = &p->guards[i];
			int code = guard_protection(g, why, sizeof(why));
			bool unprot = code != UNPROT_NONE && code != UNPROT_STANDBY;
			if (unprot != (pass == 0))
				continue;
			const char *sep = n ? "; " : "STATUS=";
			if (unprot && !any)
				sep = "STATUS=UNPROTECTED: ";
			any |= unprot;
			if (unprot || code == UNPROT_STANDBY)
				n += snprintf(line + n, sizeof(line) - n, "%s%s: %s", sep, g->svc->name,
					      why);
			else
				n += snprintf(line + n, sizeof(line) - n,
					      "%s%s: protected, epoch %lu, acked %lu", sep,
					      g->svc->name, (unsigned long)g->epoch,
					      (unsigned long)g->acked);
		}
	sd_notify(0, line);
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct primary *p = arg;
	(void)fd;
	(void)what;
	if (p->n_svcs)
		notify_status(p);
	if (p->watchdog_us)
		sd_notify(0, "WATCHDOG=1");
}

static void status_fill(struct status_report *r, void *arg)
{
	struct primary *p = arg;
	for (size_t i = 0; i < p->n_svcs; i++) {
		guard_status_fill(&p->guards[i], r);
		loopwatch_report(&p->watch, r);
	}
}

static int status_listen(struct primary *p)
{
	char err[256];
	const struct hostport *metrics =
		hostport_is_set(&p->cfg.metrics_listen) ? &p->cfg.metrics_listen : NULL;
	int r = status_server_new(p->base, p->cfg.status_socket, metrics, "checksync", status_fill,
				  p, &p->status, err, sizeof(err));
	if (r < 0)
		log_error("%s", err);
	return r;
}

static int load_config(struct primary *p, const char *path)
{
	char err[CONFIG_ERR_MAX];
	int r = config_load_daemon(path, ROLE_PRIMARY, &p->cfg, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		return r;
	}
	r = config_load_services_dir(p->cfg.services_dir, ROLE_PRIMARY, &p->svcs, &p->n_svcs, err,
				     sizeof(err));
	if (r >= 0)
		r = config_resolve_roles(&p->cfg, p->svcs, p->n_svcs, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		return r;
	}
	if (!p->n_svcs) {
		log_error("%s: no service files (*.conf) in %s", path, p->cfg.services_dir);
		return -ENOENT;
	}
	p->tls = tls_client_ctx(p->cfg.tls_ca, p->cfg.tls_cert, p->cfg.tls_key, err, sizeof(err));
	if (!p->tls) {
		log_error("%s", err);
		return -EINVAL;
	}
	return 0;
}

static struct event *add_signal(struct primary *p, int sig, event_callback_fn cb)
{
	struct event *ev = evsignal_new(p->base, sig, cb, p);
	if (ev && event_add(ev, NULL) < 0) {
		event_free(ev);
		return NULL;
	}
	return ev;
}

static void free_event(struct event *ev)
{
	if (ev)
		event_free(ev);
}

/* Everything primary_start made, in reverse: the services stop with us (see the top). */
static void primary_free(struct primary *p)
{
	sd_notify(0, "STOPPING=1");
	for (size_t i = 0; p->guards && i < p->n_svcs; i++)
		guard_stop(&p->guards[i]);
	free(p->guards);
	control_server_free(p->control);
	status_server_free(p->status);
	free_event(p->notify);
	free_event(p->sig_chld);
	free_event(p->sig_term);
	free_event(p->sig_int);
	if (p->tls)
		SSL_CTX_free(p->tls);
	loopwatch_stop(&p->watch);
	if (p->base)
		event_base_free(p->base);
	config_services_free(p->svcs, p->n_svcs);
	config_daemon_free(&p->cfg);
}

/* 1 when the configuration is bad (the caller exits EXIT_CONFIG), else 0 or -errno. */
static int primary_start(struct primary *p, const char *config_path)
{
	int r = load_config(p, config_path);
	if (r < 0)
		return 1;
	p->base = event_base_new();
	p->guards = calloc(p->n_svcs, sizeof(*p->guards));
	if (!p->base || !p->guards)
		return -ENOMEM;
	p->sig_chld = add_signal(p, SIGCHLD, on_sigchld);
	p->sig_term = add_signal(p, SIGTERM, on_sigterm);
	p->sig_int = add_signal(p, SIGINT, on_sigterm);
	if (!p->sig_chld || !p->sig_term || !p->sig_int)
		return -ENOMEM;
	if (loopwatch_start(&p->watch, p->base) < 0)
		return -ENOMEM;
	r = status_listen(p);
	if (r < 0)
		return r;
	char cerr[256];
	r = control_server_new(p->base, p->cfg.status_socket, on_command, p, &p->control, cerr,
			       sizeof(cerr));
	if (r < 0) {
		log_error("%s", cerr);
		return r;
	}
	for (size_t i = 0; i < p->n_svcs; i++) {
		guard_init(&p->guards[i], &p->svcs[i], p->base, p->tls);
		r = guard_start(&p->guards[i]);
		if (r < 0)
			return r;
	}
	sd_watchdog_enabled(0, &p->watchdog_us);
	/* STATUS= within a quarter second of a change: operators look there first. */
	struct timeval tv = {.tv_sec = 0, .tv_usec = 250000};
	if (p->watchdog_us && p->watchdog_us / 2 < 250000)
		tv.tv_usec = p->watchdog_us / 2;
	p->notify = event_new(p->base, -1, EV_PERSIST, notify_cb, p);
	if (!p->notify)
		return -ENOMEM;
	event_add(p->notify, &tv);
	notify_cb(-1, 0, p); /* STATUS= before READY=1: a started unit never shows an empty status */
	return 0;
}


/*
 * primaryd runs PRIMARYD_NICE steps ahead of the services it guards
 * (priority.h). An epoch's work after the resume (encode, compress, hash,
 * TLS, and the receiver's TCP softirq on veth) is a few ms of CPU, but at
 * equal priority a busy service on the same CPU gets most of it: the bench
 * showed primaryd running 4 ms then waiting 8-20 ms, so shipping one
 * epoch took 100-400 ms of wall time, longer than the epoch interval, and
 * epochs merged (1.7-3.7 of 10 a second shipped). The CPU it takes from
 * the service is the same either way; only when it is done changes.
 */
#define PRIMARYD_NICE 10

int primary_run(const char *config_path)
{
	struct primary p = {0};

	signal(SIGPIPE, SIG_IGN);
	int nice = 0, prio = priority_run_ahead(PRIMARYD_NICE, &nice);
	int r = primary_start(&p, config_path);
	if (r == 0) {
		priority_say(prio, nice, PRIMARYD_NICE, "epochs may merge on a busy CPU");
		sd_notify(0, "READY=1");
		log_info("guarding %zu service(s)", p.n_svcs);
		if (event_base_dispatch(p.base) < 0)
			r = log_error_errno(-EIO, "the event loop failed");
	}
	primary_free(&p);
	return r == 1 ? EXIT_CONFIG : r < 0 ? 1 : p.exit_code;
}

int primary_command(const char *config_path, int argc, char **argv)
{
	struct daemon_config cfg;
	char err[CONFIG_ERR_MAX];

	if (config_load_daemon(config_path, ROLE_PRIMARY, &cfg, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	int r = control_send(cfg.status_socket, argc, argv, stdout, err, sizeof(err));
	config_daemon_free(&cfg);
	if (r < 0) {
		log_error("%s", err);
		return 1;
	}
	return r;
}

int primary_status(const char *config_path)
{
	struct daemon_config cfg;
	char err[CONFIG_ERR_MAX];

	if (config_load_daemon(config_path, ROLE_PRIMARY, &cfg, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	int r = status_print(cfg.status_socket, stdout, err, sizeof(err));
	config_daemon_free(&cfg);
	if (r < 0) {
		log_error("%s", err);
		return 1;
	}
	return 0;
}
