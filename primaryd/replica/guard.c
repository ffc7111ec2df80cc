/*
 * guard.c - the timers of one protected service.
 *
 * Epoch timer: capture and ship, unless the backup is not there or behind
 * (then the epoch merges into the next: the hash table still holds what
 * the backup has, so the next epoch carries every change since).
 * Heartbeat timer: tell the backup we are alive.
 * Lease timer: when the backup has not been heard for lease_ms, freeze the
 * service. The backup waits at least that long (its failover timeout is
 * longer than the lease) before it restores, so two copies never serve.
 */
#include <math.h>
#include <signal.h>

#include "guard.h"
#include "log.h"
#include "outcommit.h"
#include "status.h"
#include "util.h"

#define BACKLOG_LIMIT (64u << 20)

static struct timeval ms_tv(uint32_t ms)
{
	return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

static void record_pause(struct guard *g, uint64_t us)
{
	g->pauses[g->n_pauses++ % PAUSE_RING] = us;
}

/* Capture and ship one epoch; with hold, the service stays frozen as captured. */
int guard_ship_epoch(struct guard *g, bool hold)
{
	struct epoch_report rep = {0};
	struct image *img = NULL;
	bool full = g->need_full;

	outcommit_stop_point(g->oc);
	g->sess->hold_after_epoch = hold;
	int r = capture_session_epoch(g->sess, full, &img, &rep);
	g->sess->hold_after_epoch = false;
	if (r < 0) {
		log_warn("%s: epoch capture failed: %s", g->svc->name, strerror(-r));
		return r;
	}
	record_pause(g, rep.pause_us);
	g->last_mode = rep.mode;
	g->safepoint_retries += rep.safepoint_tries;
	g->fallbacks += rep.fallback;
	uint64_t epoch = g->epoch + 1;
	if (hold) /* held since the capture: all it sent so far is of this epoch's state */
		outcommit_stop_point(g->oc);
	r = link_send_epoch(g, img, epoch, full ? 0 : g->sent);
	if (r == 0)
		outcommit_epoch(g->oc, epoch, img);
	image_free(img);
	if (r < 0)
		return r;
	g->epoch = g->sent = epoch;
	g->need_full = false;
	g->epochs_sent++;
	log_debug("%s: epoch %lu (%s): %lu of %lu pages, %lu bytes, paused %lu us", g->svc->name,
		  (unsigned long)epoch, full ? "full" : "delta", (unsigned long)rep.pages_shipped,
		  (unsigned long)rep.pages_captured, (unsigned long)g->last_bytes,
		  (unsigned long)rep.pause_us);
	return 0;
}

static void epoch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct guard *g = arg;
	(void)fd;
	(void)what;

	if (!g->hello_ok || !pfailover_ships_epochs(g))
		return;
	if (link_backlog(g) > BACKLOG_LIMIT) {
		g->merged++;
		return;
	}
	if (!g->need_full && outcommit_wait(g->oc, g->sent, g->acked)) {
		g->merged++; /* output commit: one epoch in flight (outcommit.h) */
		return;
	}
	(void)guard_ship_epoch(g, false);
}

static void hb_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	link_send_heartbeat(arg);
}

static void lease_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pfailover_lease_tick(arg);
}

void guard_link_lost(struct guard *g)
{
	g->hello_ok = false;
	g->need_full = true;
	link_schedule_reconnect(g);
}

/* Once the service is dead: what it sent for unacknowledged epochs is dropped, never let go. */
void guard_stop_output(struct guard *g)
{
	if (!g->oc)
		return;
	if (g->pid > 0)
		kill(g->pid, SIGKILL); /* it dies with us anyway; it must send nothing once the rules go */
	outcommit_close(g->oc);
	g->oc = NULL;
}

static uint64_t percentile(const struct guard *g, int pct)
{
	size_t n = g->n_pauses < PAUSE_RING ? g->n_pauses : PAUSE_RING;
	uint64_t v[PAUSE_RING];
	if (!n)
		return 0;
	memcpy(v, g->pauses, n * sizeof(*v));
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j && v[j - 1] > v[j]; j--) {
			uint64_t t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return v[(n - 1) * pct / 100];
}

/* How epochs are captured, and from which DWARF: known from the session's start. */
static void guard_status_debuginfo(const struct guard *g, struct status_report *r)
{
	const struct capture *c = g->sess ? &g->sess->c : NULL;
	const char *mode = g->last_mode ? g->last_mode
			   : c && !c->go    ? "whole (no DWARF)"
					    : NULL;

	status_report_text(r, "capture_mode", mode ? mode : "-",
			   "how the last epoch was captured: live, whole (no DWARF) or whole (no "
			   "safepoint)");
	status_report_text(r, "debug_info",
			   c && c->debuginfo.source != GO_DEBUG_NONE ? c->debuginfo.path : "none",
			   "the file the runtime layout was read from");
}

void guard_status_fill(const struct guard *g, struct status_report *r)
{
	uint64_t now = now_us();
	const char *role = pfailover_state_name(g->fo.state);

	status_report_service(r, g->svc->name, role);
	status_report_gauge(r, "pid", "", g->pid, "pid of the guarded service");
	status_report_gauge(r, "epoch", "", g->epoch, "last epoch sent to the backup");
	status_report_gauge(r, "acked_epoch", "", g->acked, "last epoch the backup acknowledged");
	status_report_gauge(r, "lag", "seconds",
			    g->acked_at_us ? (now - g->acked_at_us) / 1e6 : NAN,
			    "time since the last acknowledgement");
	status_report_gauge(r, "pause_p50", "seconds", g->n_pauses ? percentile(g, 50) / 1e6 : NAN,
			    "median time the service was stopped per epoch (last 256)");
	status_report_gauge(r, "pause_p99", "seconds", g->n_pauses ? percentile(g, 99) / 1e6 : NAN,
			    "99th percentile of the pause per epoch (last 256)");
	status_report_gauge(r, "epoch_size", "bytes", g->last_bytes, "bytes of the last epoch");
	status_report_gauge(r, "epoch_size_mean", "bytes",
			    g->epochs_sent ? (double)g->total_bytes / g->epochs_sent : NAN,
			    "mean bytes per epoch");
	status_report_gauge(r, "heartbeat_age", "seconds", (now - g->last_heard_us) / 1e6,
			    "time since the backup was last heard");
	status_report_gauge(r, "backup_connected", "", g->hello_ok, "1 when the backup accepted us");
	status_report_counter(r, "epochs_sent", "", g->epochs_sent, "epochs shipped");
	status_report_counter(r, "epochs_merged", "", g->merged,
			      "epochs skipped while the backup caught up");
	status_report_counter(r, "safepoint_retries", "", g->safepoint_retries,
			      "times the runtime was let run to reach a safepoint");
	status_report_counter(r, "safepoint_fallbacks", "", g->fallbacks,
			      "epochs captured whole for want of a safepoint");
	guard_status_debuginfo(g, r);
	outcommit_status_fill(g->oc, r);
}

/* Start or attach the service and hold it; the lease starts now. */
int guard_start_service(struct guard *g)
{
	int r;

	/* Before the service runs, so that a failure is said before it serves. */
	if (g->svc->output_commit && !(g->oc = outcommit_open(g->base, g->svc->name)))
		return -ENOMEM;
	if (g->svc->command.argc) {
		r = service_spawn(g->svc, &g->pid);
	} else {
		r = service_attach_pidfile(g->svc, &g->pid);
	}
	if (r < 0)
		return log_error_errno(r, "%s: cannot start the service", g->svc->name);
	r = capture_session_open(g->pid, g->svc->debug_file, &g->sess);
	if (r < 0)
		return r;
	g->sess->use_wp = g->svc->dirty_tracking == DIRTY_UFFD;
	/* A spawned service has PR_SET_PDEATHSIG; one we attached to must stay held. */
	g->sess->c.detach_between = g->svc->command.argc > 0;
	/* Hold every thread now, so the service dies with us from this moment on. */
	r = capture_stop_all(&g->sess->c);
	if (r >= 0)
		r = capture_resume_all(&g->sess->c);
	if (r < 0)
		return log_error_errno(r, "%s: cannot seize the service", g->svc->name);
	g->last_heard_us = now_us();
	pfailover_start(g, g->last_heard_us);
	g->need_full = true;
	return 0;
}

/*
 * A service we start is started only once the backup has answered
 * (failover.h, "starting"); one we attach to is running already, and is
 * held from the start.
 */
int guard_start(struct guard *g)
{
	int r;

	pfailover_init(g);
	if (!g->svc->command.argc) {
		r = guard_start_service(g);
		if (r < 0)
			return r;
	}
	g->last_heard_us = now_us();
	struct timeval ep = ms_tv(g->svc->epoch_interval_ms);
	struct timeval hb = ms_tv(g->svc->heartbeat_interval_ms);
	struct timeval ls = ms_tv(g->svc->heartbeat_interval_ms / 2 ? g->svc->heartbeat_interval_ms / 2 : 1);
	g->epoch_ev = event_new(g->base, -1, EV_PERSIST, epoch_cb, g);
	g->hb_ev = event_new(g->base, -1, EV_PERSIST, hb_cb, g);
	g->lease_ev = event_new(g->base, -1, EV_PERSIST, lease_cb, g);
	if (!g->epoch_ev || !g->hb_ev || !g->lease_ev)
		return -ENOMEM;
	event_add(g->epoch_ev, &ep);
	event_add(g->hb_ev, &hb);
	event_add(g->lease_ev, &ls);
	link_connect(g);
	return 0;
}
