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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guard.h"
#include "log.h"
#include "loopwatch.h"
#include "outcommit.h"
#include "status.h"
#include "util.h"
#include "witness.h"

#define BACKLOG_LIMIT (64u << 20)
/* The work after an epoch's resume runs in steps of this much of the loop, heartbeats between. */
#define AFTER_STEP_US 5000

static struct timeval ms_tv(uint32_t ms)
{
	return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

static void guard_check(struct guard *g);

static void record_pause(struct guard *g, uint64_t us)
{
	g->pauses[g->n_pauses++ % PAUSE_RING] = us;
}

static int epoch_captured(struct guard *g, int r, struct image *img, const struct epoch_report *rp,
			  bool full, bool hold, const char *why);

/* The next step of the work after the resume; the epoch goes out when it is done. */
static int after_step(struct guard *g, uint64_t budget_us)
{
	struct epoch_report rep = {0};
	struct image *img = NULL;
	char why[200];

	log_hold_errors(why, sizeof(why));
	int r = capture_session_epoch_step(g->sess, budget_us, &img, &rep);
	log_hold_errors(NULL, 0);
	if (r == 1)
		return 1;
	/* A delta for a connection that is gone, or from a primary the backup has replaced. */
	if (r >= 0 && (g->after_link_lost || pfailover_deposed_state(g))) {
		capture_session_image_free(g->sess, img);
		g->need_full = true;
		return -ENOTCONN;
	}
	return epoch_captured(g, r, img, &rep, g->after_full, false, why);
}

static void after_cb(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval now = {0, 0};
	struct guard *g = arg;
	(void)fd, (void)what;

	/* A zero timeout, not event_active(): that would run again before any I/O. */
	uint64_t t0 = now_us();
	int r = capture_session_epoch_pending(g->sess) ? after_step(g, AFTER_STEP_US) : 0;
	loopwatch_note(g->svc->name, "a step after an epoch's resume (and its first slice)", t0);
	if (r == 1)
		evtimer_add(g->after_ev, &now);
}

/* An epoch whose work after the resume is under way: finish it now (a final epoch follows). */
static void after_finish(struct guard *g)
{
	if (!capture_session_epoch_pending(g->sess))
		return;
	evtimer_del(g->after_ev);
	(void)after_step(g, UINT64_MAX);
}

bool guard_after_pending(const struct guard *g)
{
	return capture_session_epoch_pending(g->sess);
}

/* Capture and ship one epoch; with hold, the service stays frozen as captured. */
int guard_ship_epoch(struct guard *g, bool hold)
{
	static const struct timeval now = {0, 0};
	struct epoch_report rep = {0};
	struct image *img = NULL;
	/* The last epoch's pages are still being queued (link.c): this one waits, a final one not. */
	if (link_busy(g) && !hold)
		return -EBUSY;
	after_finish(g);
	link_finish_epoch(g);
	bool full = g->need_full;

	char why[200];

	if (!g->after_ev && !(g->after_ev = evtimer_new(g->base, after_cb, g)))
		return -ENOMEM;
	outcommit_stop_point(g->oc);
	g->sess->hold_after_epoch = hold;
	/* An epoch that fails fails again 10 times a second: say so once, by guard_check(). */
	log_hold_errors(why, sizeof(why));
	uint64_t t0 = now_us();
	int r = capture_session_epoch(g->sess, full, &img, &rep);
	uint64_t took = now_us() - t0;
	log_hold_errors(NULL, 0);
	g->sess->hold_after_epoch = false;
	if (took >= LOOPWATCH_SAY_US) /* beside loopwatch.c's line: what held the loop */
		log_info("%s: a %s epoch's capture held the loop for %lu ms: the stop %lu ms, after "
			 "the resume %lu ms", g->svc->name, full ? "full" : "delta",
			 (unsigned long)(took / 1000), (unsigned long)(rep.pause_us / 1000),
			 (unsigned long)((took > rep.pause_us ? took - rep.pause_us : 0) / 1000));
	if (r == 1 && !hold) {
		/* The reach scan goes on in steps from the loop: heartbeats, ACKs and the lease between. */
		g->after_full = full;
		g->after_link_lost = false;
		evtimer_add(g->after_ev, &now);
		return 0;
	}
	if (r == 1) {
		log_hold_errors(why, sizeof(why));
		while ((r = capture_session_epoch_step(g->sess, UINT64_MAX, &img, &rep)) == 1)
			;
		log_hold_errors(NULL, 0);
	}
	return epoch_captured(g, r, img, &rep, full, hold, why);
}

/* The epoch's capture ended (r < 0: it failed): ship it. */
static int epoch_captured(struct guard *g, int r, struct image *img, const struct epoch_report *rp,
			  bool full, bool hold, const char *why)
{
	struct epoch_report rep = *rp;

	if (r < 0) {
		snprintf(g->capture_err, sizeof(g->capture_err), "epoch capture failing: %s",
			 why[0] ? why : strerror(-r));
		/*
		 * A capture can fail after it has read and re-armed the written set:
		 * those writes would never be shipped. The next epoch is a full one.
		 */
		g->need_full = true;
		guard_check(g);
		return r;
	}
	g->capture_err[0] = 0;
	record_pause(g, rep.pause_us);
	if (full)
		g->full_pause_us = rep.pause_us;
	g->last_mode = rep.mode;
	g->safepoint_retries += rep.safepoint_tries;
	g->fallbacks += rep.fallback;
	uint64_t epoch = g->epoch + 1;
	if (hold) /* held since the capture: all it sent so far is of this epoch's state */
		outcommit_stop_point(g->oc);
	outcommit_epoch(g->oc, epoch);
	r = link_send_epoch(g, img, epoch, full ? 0 : g->sent); /* takes img */
	if (r < 0)
		return r;
	g->epoch = g->sent = epoch;
	g->sent_captured = true;
	g->need_full = false;
	g->epochs_sent++;
	log_debug("%s: epoch %lu (%s): %lu of %lu pages, %lu bytes, paused %lu us", g->svc->name,
		  (unsigned long)epoch, full ? "full" : "delta", (unsigned long)rep.pages_shipped,
		  (unsigned long)rep.pages_captured, (unsigned long)g->link.last_bytes,
		  (unsigned long)rep.pause_us);
	return 0;
}

static void epoch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct guard *g = arg;
	(void)fd;
	(void)what;

	if (!g->link.hello_ok || g->ended)
		return;
	pfailover_lease_tick(g); /* a lease that lapsed while we did not run freezes first */
	/* A capture would let a service go that the keeper holds (PTRACE_CONT ends a group-stop). */
	if (!pfailover_ships_epochs(g) || keeper_holds(&g->keeper))
		return;
	if (guard_precopy_tick(g)) /* it ships the epoch when its rounds are done */
		return;
	if (guard_epoch_may_ship(g))
		(void)guard_ship_epoch(g, false);
}

bool guard_epoch_may_ship(struct guard *g)
{
	if (link_busy(g)) {
		/* Late, not skipped: link.c runs the epoch once the last one is queued. */
		if (g->epoch_owed)
			g->merged++;
		g->epoch_owed = true;
		return false;
	}
	if (link_backlog(g) > BACKLOG_LIMIT) {
		g->merged++;
		return false;
	}
	if (!g->need_full && outcommit_wait(g->oc, g->sent, g->acked)) {
		g->merged++; /* output commit: one epoch in flight (outcommit.h) */
		return false;
	}
	return true;
}

static void hb_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	link_send_heartbeat(arg);
}

static void describe_wait(int st, char *buf, size_t len)
{
	if (st == -1)
		snprintf(buf, len, "ended");
	else if (WIFEXITED(st))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	else
		snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(st),
			 strsignal(WTERMSIG(st)));
}

int guard_protection(const struct guard *g, char *buf, size_t len)
{
	char how[96], hp[300];
	uint64_t since = g->acked_at_us ? now_us() - g->acked_at_us : 0;

	buf[0] = 0;
	if (g->fo.state == PFAILOVER_STANDBY)
		return snprintf(buf, len, "standby: the service runs on another of its hosts (or "
					  "is to be started by the first)"),
		       UNPROT_STANDBY;
	if (pfailover_deposed_state(g))
		return snprintf(buf, len, "the backup has taken over"), UNPROT_DEPOSED;
	if (g->ended) {
		describe_wait(g->end_status, how, sizeof(how));
		return snprintf(buf, len, "the service %s", how), UNPROT_ENDED;
	}
	if (pfailover_backup_lost(g, now_us()))
		return snprintf(buf, len,
				"backup not heard for over %u ms: serving on without it (on_backup_loss "
				"= continue, %s)",
				g->svc->lease_ms,
				g->witness ? "the witness's key is ours" : "the fence hook guards a takeover"),
		       UNPROT_BACKUP_LOST;
	switch (g->fo.state) {
	case PFAILOVER_STARTING:
		return snprintf(buf, len, "service not started: waiting for the backup to answer"),
		       UNPROT_NOT_STARTED;
	case PFAILOVER_FROZEN:
		return snprintf(buf, len, "service frozen: backup not heard for over %u ms (lease)",
				g->svc->lease_ms),
		       UNPROT_FROZEN;
	case PFAILOVER_HANDING_OVER:
		return snprintf(buf, len, "handing over to the backup"), UNPROT_FROZEN;
	case PFAILOVER_STOPPING:
	case PFAILOVER_STOPPED:
		return snprintf(buf, len, "stopped everywhere"), UNPROT_DEPOSED;
	default:
		break;
	}
	if (g->capture_err[0])
		return snprintf(buf, len, "%s", g->capture_err), UNPROT_CAPTURE;
	if (!g->link.hello_ok) {
		hostport_format(&g->svc->backup, hp, sizeof(hp));
		return snprintf(buf, len, "backup %s not connected", hp), UNPROT_NOT_CONNECTED;
	}
	if (!g->acked_at_us)
		return snprintf(buf, len, "no epoch acknowledged yet"), UNPROT_NO_ACK;
	/* The backup would take over from an image older than this. */
	if (since > (uint64_t)g->svc->failover_timeout_ms * 1000)
		return snprintf(buf, len, "no epoch acknowledged for over %u ms",
				g->svc->failover_timeout_ms),
		       UNPROT_NO_ACK;
	return UNPROT_NONE;
}

/* Log the changes of protection (not every epoch) and the milestones of a normal life. */
static void guard_check(struct guard *g)
{
	char why[sizeof(g->unprotected)];

	if (g->acked && !g->first_ack_logged) {
		g->first_ack_logged = true;
		log_info("%s: first epoch acknowledged by the backup (epoch %lu)", g->svc->name,
			 (unsigned long)g->acked);
	}
	guard_protection(g, why, sizeof(why));
	if (strcmp(why, g->unprotected) == 0)
		return;
	if (why[0])
		log_warn("%s: UNPROTECTED: %s", g->svc->name, why);
	else
		log_info("%s: protected: the backup holds epoch %lu", g->svc->name,
			 (unsigned long)g->acked);
	snprintf(g->unprotected, sizeof(g->unprotected), "%s", why);
}

static void lease_cb(evutil_socket_t fd, short what, void *arg)
{
	struct guard *g = arg;
	uint64_t now = now_us(), lease_us = (uint64_t)g->svc->lease_ms * 1000;
	(void)fd;
	(void)what;
	if (g->last_tick_us && now - g->last_tick_us > lease_us)
		log_warn("%s: primaryd did not run for %lu ms (more than the lease); the lease "
			 "keeper %s",
			 g->svc->name, (unsigned long)((now - g->last_tick_us) / 1000),
			 keeper_holds(&g->keeper) ? "has stopped the service meanwhile"
						  : "did not need to stop the service");
	g->last_tick_us = now;
	pfailover_lease_tick(g);
	link_drop_if_silent(g, now);
	guard_check(g);
	/*
	 * The keeper's deadline is the lease's end as failover.c counts it (from
	 * the backup's send time): renewed while the lease runs, left to lapse
	 * when it has, so a primaryd that stops running stops the service too.
	 */
	if (g->fo.state == PFAILOVER_PROTECTED || g->fo.state == PFAILOVER_HANDING_OVER)
		keeper_renew(&g->keeper, pfailover_runs_until(g));
}

static void lease_again_cb(evutil_socket_t fd, short what, void *arg)
{
	struct guard *g = arg;
	(void)fd, (void)what;
	pfailover_lease_tick(g);
	guard_check(g);
}

bool guard_lease_judge_later(struct guard *g, uint64_t now)
{
	static const struct timeval zero = {0, 0};

	if (!g->lease_put_off_us) {
		g->lease_put_off_us = now;
	} else if (now - g->lease_put_off_us > (uint64_t)g->svc->heartbeat_interval_ms * 1000) {
		g->lease_put_off_us = 0;
		return false;
	}
	if (!g->lease_again_ev && !(g->lease_again_ev = evtimer_new(g->base, lease_again_cb, g)))
		return false;
	/* A zero timeout: the loop polls the socket (and reads) before it runs the timer. */
	evtimer_add(g->lease_again_ev, &zero);
	return true;
}

void guard_link_lost(struct guard *g)
{
	g->need_full = true;
	g->after_link_lost = true;
	if (!g->ended && !g->stopping)
		link_schedule_reconnect(g);
}

void guard_backup_hello(struct guard *g, const struct wire_hello *h)
{
	g->need_full = !guard_may_resume(g, h); /* resume.c: a delta on the backup's epoch, or full */
	pfailover_backup_hello(g, h->incarnation);
}

void guard_backup_heard(struct guard *g, uint64_t sent_us)
{
	g->last_heard_us = now_us();
	g->lease_put_off_us = 0; /* a lapse from here on may be put off again */
	pfailover_backup_heard(g, sent_us);
}

void guard_acked(struct guard *g, uint64_t epoch)
{
	if (epoch > g->acked) {
		g->acked = epoch;
		g->acked_at_us = now_us();
		outcommit_acked(g->oc, g->acked);
	}
	pfailover_acked(g, epoch);
}

/*
 * The service is gone: only this service is affected. Its timers stop and
 * its link closes, so its backup hears nothing more and takes it over on
 * its failover timeout; the daemon and the other services carry on.
 */
static void service_ended(struct guard *g, int st)
{
	char how[96];

	if (g->ended)
		return;
	describe_wait(st, how, sizeof(how));
	g->ended = true;
	event_del(g->exit_ev);
	g->end_status = st;
	event_del(g->epoch_ev);
	event_del(g->hb_ev);
	event_del(g->lease_ev);
	if (pfailover_deposed_state(g)) {
		log_info("%s: our copy (pid %d) %s; the backup serves", g->svc->name, g->pid, how);
	} else {
		log_error("%s: the service (pid %d) %s; closing its link so its backup takes it "
			  "over; the other services carry on",
			  g->svc->name, g->pid, how);
	}
	link_close(g, "the service has ended");
	keeper_stop(&g->keeper);
	/* Dead, it sends nothing more: drop what it held for unacknowledged epochs. */
	outcommit_close(g->oc);
	g->oc = NULL;
	service_cgroup_remove(&g->cgroup);
	capture_session_close(g->sess);
	g->sess = NULL;
	guard_check(g);
}

void guard_on_wait(struct guard *g, pid_t pid, int st)
{
	if (g->sess && capture_session_on_wait(g->sess, pid, st) == 1)
		service_ended(g, st);
}

void guard_keeper_ended(struct guard *g, int st)
{
	char how[96];
	describe_wait(st, how, sizeof(how));
	keeper_reaped(&g->keeper); /* the pid is no longer ours to signal */
	keeper_stop(&g->keeper);
	if (g->ended || pfailover_deposed_state(g))
		return;
	log_warn("%s: the lease keeper %s; starting another", g->svc->name, how);
	int r = keeper_start(&g->keeper, g->pid, g->last_heard_us + g->svc->lease_ms * 1000ull,
			     g->adopted);
	if (r < 0)
		log_error("%s: cannot start the lease keeper: %s; a stalled primaryd could no "
			  "longer stop the service",
			  g->svc->name, strerror(-r));
}

/*
 * The service's pidfd is readable: it has ended. Usually the daemon's
 * reaper has seen that first; but a capture that was seizing the service
 * as it died may have taken its exit with waitpid(tid), and then only the
 * pidfd tells.
 */
static void exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct guard *g = arg;
	siginfo_t si = {0};
	int st = -1;
	(void)what;
	if (waitid(P_PIDFD, fd, &si, WEXITED | WNOHANG | __WALL) == 0 && si.si_pid)
		st = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0) : si.si_status;
	service_ended(g, st);
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
	service_cgroup_remove(&g->cgroup);
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
	status_report_text(r, "backup_debug_info",
			   !g->link.hello_ok ? "-" : g->link.backup_no_dwarf ? "missing" : "found",
			   "whether the backup's host has the DWARF a takeover may need");
}

void guard_status_fill(const struct guard *g, struct status_report *r)
{
	uint64_t now = now_us();
	const char *role = g->ended && !pfailover_deposed_state(g) ? "failed" : pfailover_state_name(g->fo.state);

	status_report_service(r, g->svc->name, role);
	status_report_gauge(r, "pid", "", g->pid, "pid of the guarded service");
	status_report_gauge(r, "epoch", "", g->epoch, "last epoch sent to the backup");
	status_report_gauge(r, "acked_epoch", "", g->acked, "last epoch the backup acknowledged");
	status_report_gauge(r, "epoch_in_capture", "", guard_after_pending(g),
			    "1 while an epoch captured after `epoch` is still being made ready (the "
			    "reach scan, in steps): it gets its number when it is sent");
	status_report_gauge(r, "lag", "seconds",
			    g->acked_at_us ? (now - g->acked_at_us) / 1e6 : NAN,
			    "time since the last acknowledgement");
	status_report_gauge(r, "pause_p50", "seconds", g->n_pauses ? percentile(g, 50) / 1e6 : NAN,
			    "median time the service was stopped per epoch (last 256)");
	status_report_gauge(r, "pause_p99", "seconds", g->n_pauses ? percentile(g, 99) / 1e6 : NAN,
			    "99th percentile of the pause per epoch (last 256)");
	status_report_gauge(r, "epoch_size", "bytes", g->link.last_bytes, "bytes of the last epoch");
	status_report_gauge(r, "pause_full_last", "seconds",
			    g->full_pause_us ? g->full_pause_us / 1e6 : NAN,
			    "the stop of the last full epoch (the initial sync, or after a lost link)");
	status_report_gauge(r, "epoch_size_mean", "bytes",
			    g->epochs_sent ? (double)g->link.total_bytes / g->epochs_sent : NAN,
			    "mean bytes per epoch");
	status_report_gauge(r, "heartbeat_age", "seconds", (now - g->last_heard_us) / 1e6,
			    "time since the backup was last heard");
	status_report_gauge(r, "backup_connected", "", g->link.hello_ok, "1 when the backup accepted us");
	status_report_gauge(r, "keeper_holds", "", keeper_holds(&g->keeper),
			    "1 while the lease keeper holds the service stopped (lease not renewed)");
	char why[256];
	int code = guard_protection(g, why, sizeof(why));
	status_report_gauge(r, "protected", "", code == UNPROT_NONE,
			    "1 while the backup holds a recent acknowledged epoch");
	status_report_gauge(r, "unprotected_reason", "", code,
			    "0 protected, 1 backup not connected, 2 no recent acknowledgement, "
			    "3 capture failing, 4 frozen, 5 service ended, 6 deposed, 7 not started, "
			    "8 serving without the backup, 9 standby");
	if (g->witness) {
		char wtext[300];
		uint64_t until = witness_until(g->witness);
		if (witness_holds(g->witness, now))
			snprintf(wtext, sizeof(wtext), "held");
		else
			snprintf(wtext, sizeof(wtext), "not held%s%s%s%s",
				 witness_holder(g->witness)[0] ? ": held by " : "",
				 witness_holder(g->witness), witness_error(g->witness)[0] ? "; " : "",
				 witness_error(g->witness));
		status_report_gauge(r, "witness_held", "", witness_holds(g->witness, now),
				    "1 while this host holds the service's key on the etcd witness");
		status_report_gauge(r, "witness_lease_left", "seconds",
				    until > now ? (until - now) / 1e6 : 0,
				    "how long our lease on the witness's key is known to live");
		status_report_text(r, "witness", wtext, "the etcd witness's key, as this host sees it");
	}
	status_report_counter(r, "epochs_sent", "", g->epochs_sent, "epochs shipped");
	status_report_counter(r, "lease_freezes", "", g->fo.lease_freezes,
			      "times the service was frozen because the backup's lease ran out");
	status_report_gauge(r, "lease_freeze_longest", "seconds",
			    pfailover_freeze_longest_us(g, now) / 1e6,
			    "the longest of those freezes (one under way included)");
	status_report_counter(r, "epochs_merged", "", g->merged,
			      "epochs skipped while the backup caught up");
	status_report_counter(r, "reconnects_resumed", "", g->resumed,
			      "reconnects that went on from the epoch the backup held, not a full one");
	status_report_counter(r, "safepoint_retries", "", g->safepoint_retries,
			      "times the runtime was let run to reach a safepoint");
	status_report_counter(r, "safepoint_fallbacks", "", g->fallbacks,
			      "epochs captured whole for want of a safepoint");
	status_report_counter(r, "shipped", "bytes", g->link.total_bytes,
			      "bytes queued to the backup since start (epochs, heartbeats, HELLO)");

	guard_status_debuginfo(g, r);
	if (code != UNPROT_NONE)
		status_report_text(r, "unprotected", why, "why the backup could not take over from a "
					 "recent epoch");
	if (g->sess)
		capture_session_report(g->sess, r);
	outcommit_status_fill(g->oc, r);
}

/*
 * With output_commit = on: the service's own cgroup (cgroup.h: made for a
 * service we start, pid's for one we attach to), then the queue and rule
 * that hold its packets. A failure leaves the service unheld, said once
 * (outcommit.h); -ENOMEM only for want of memory.
 *
 * One handed to us (adopt.c) keeps the cgroup backupd restored it in (its
 * scope, or one of its own: backupd/restorer.c). It is never moved: a
 * socket stays in the cgroup it was made in, and a connection accepted on
 * it is of the listener's, so a service moved after its restore would
 * answer on its restored listener unheld while status said held.
 */
static int output_commit_open(struct guard *g, pid_t pid)
{
	char err[512];
	int r;

	if (!g->svc->output_commit)
		return 0;
	r = pid ? service_cgroup_of(pid, &g->cgroup, err, sizeof(err))
		: service_cgroup_make(g->svc->name, &g->cgroup, err, sizeof(err));
	g->oc = outcommit_open(g->base, g->svc->name, r < 0 ? NULL : g->cgroup.path);
	if (!g->oc)
		return -ENOMEM;
	if (r < 0)
		outcommit_refuse(g->oc, err);
	return 0;
}

/* Start or attach the service and hold it; the lease starts now. */
int guard_start_service(struct guard *g)
{
	int r;

	if (g->adopted) {
		/* adopt.c: a restored process, g->pid, in the cgroup it was restored in */
		r = output_commit_open(g, g->pid);
	} else if (g->svc->command.argc) {
		/* Output commit before the service runs: a failure is said before it serves. */
		r = output_commit_open(g, 0);
		if (r >= 0)
			r = service_spawn_in(g->svc, g->oc && g->cgroup.made ? &g->cgroup : NULL,
					     &g->pid);
	} else {
		r = service_attach_pidfile(g->svc, &g->pid);
		if (r >= 0)
			r = output_commit_open(g, g->pid);
	}
	if (r < 0)
		return log_error_errno(r, "%s: cannot start the service", g->svc->name);
	r = capture_session_open(g->pid, g->svc->debug_file, &g->sess);
	if (r < 0)
		return r;
	g->sess->use_wp = g->svc->dirty_tracking == DIRTY_UFFD;
	g->sess->use_precopy = g->sess->use_wp && g->svc->precopy;
	g->sess->c.reach_off = !g->svc->reach;
	r = capture_session_set_deltas(g->sess, (uint64_t)g->svc->delta_cache_mb << 20,
				       g->svc->compression);
	if (r < 0)
		return log_error_errno(r, "%s: cannot make the %u MiB delta cache", g->svc->name,
				       g->svc->delta_cache_mb);
	/*
	 * A spawned service has PR_SET_PDEATHSIG, an adopted one a keeper that
	 * kills it with us (keeper.h); one we attached to must stay held.
	 */
	g->sess->c.detach_between = g->svc->command.argc > 0 || g->adopted;
	/* Hold every thread now, so the service dies with us from this moment on. */
	r = capture_stop_all(&g->sess->c);
	if (r >= 0)
		r = capture_resume_all(&g->sess->c);
	if (r < 0)
		return log_error_errno(r, "%s: cannot seize the service", g->svc->name);
	g->pidfd = (int)syscall(SYS_pidfd_open, g->pid, 0);
	if (g->pidfd < 0)
		return log_error_errno(-errno, "%s: cannot watch pid %d", g->svc->name, g->pid);
	g->exit_ev = event_new(g->base, g->pidfd, EV_READ, exit_cb, g);
	if (!g->exit_ev)
		return -ENOMEM;
	event_add(g->exit_ev, NULL);
	g->last_heard_us = now_us();
	pfailover_start(g, g->last_heard_us);
	r = keeper_start(&g->keeper, g->pid, g->last_heard_us + g->svc->lease_ms * 1000ull,
			 g->adopted);
	if (r < 0)
		return log_error_errno(r, "%s: cannot start the lease keeper", g->svc->name);
	g->need_full = true;
	return 0;
}

void guard_init(struct guard *g, const struct service_config *svc, struct event_base *base,
		SSL_CTX *tls)
{
	*g = (struct guard){.svc = svc, .base = base, .tls = tls, .pidfd = -1};
}

/*
 * A service we start is started only once the backup has answered
 * (failover.h, "starting"); one we attach to is running already, and is
 * held from the start.
 */
/* Our name on the witness's key: the primary's certificate name, else the host's. */
static int guard_open_witness(struct guard *g)
{
	char host[256] = "";
	const char *me = g->svc->primary;
	struct witness_tls tls = {g->svc->witness_ca, g->svc->witness_cert, g->svc->witness_key};
	int r;

	if (!g->svc->witness.n)
		return 0;
	if (!me) {
		(void)gethostname(host, sizeof(host) - 1);
		me = host;
	}
	r = witness_new(g->base, &g->svc->witness, g->svc->name, me, g->svc->witness_ttl_ms,
			g->svc->heartbeat_interval_ms, &tls, NULL, NULL, &g->witness);
	return r < 0 ? log_error_errno(r, "%s: cannot set up the witness", g->svc->name) : 0;
}

int guard_start(struct guard *g)
{
	int r;

	r = guard_open_witness(g);
	if (r < 0)
		return r;
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

static void free_event(struct event **ev)
{
	if (*ev)
		event_free(*ev);
	*ev = NULL;
}

void guard_stop(struct guard *g)
{
	if (!g->svc)
		return; /* never started */
	g->stopping = true;
	free_event(&g->epoch_ev);
	free_event(&g->hb_ev);
	free_event(&g->lease_ev);
	free_event(&g->exit_ev);
	free_event(&g->precopy_ev);
	free_event(&g->after_ev);
	free_event(&g->lease_again_ev);
	link_free(g);
	keeper_stop(&g->keeper);
	if (g->pid > 0 && !g->ended && g->adopted) {
		kill(g->pid, SIGKILL); /* not our child: its parent (backupd) reaps it */
	} else if (g->pid > 0 && !g->ended) {
		kill(g->pid, SIGKILL);
		/*
		 * Its exit is ours to reap (our child, or our tracee), but a traced
		 * leader is reported only once its traced threads are reaped: take
		 * whatever comes until it is among them.
		 */
		pid_t r;
		do
			r = waitpid(-1, NULL, __WALL);
		while (r != g->pid && (r >= 0 || errno == EINTR));
	}
	outcommit_close(g->oc); /* only once the service can send no more */
	g->oc = NULL;
	service_cgroup_remove(&g->cgroup);
	capture_session_close(g->sess);
	g->sess = NULL;
	if (g->pidfd >= 0)
		close(g->pidfd);
	g->pidfd = -1;
	witness_free(g->witness);
	g->witness = NULL;
}

/* ---------- adopting a restored process (adopt.c decides, this writes) ---------- */

/* What the last run of this guard left: a fresh start, as guard_start() had it. */
static void reset_run(struct guard *g)
{
	if (g->exit_ev)
		event_free(g->exit_ev);
	g->exit_ev = NULL;
	if (g->pidfd >= 0)
		close(g->pidfd);
	g->pidfd = -1;
	g->ended = false; /* deposed: pfailover_deposed_state(), from g->fo */
	g->end_status = 0;
	g->acked = g->acked_at_us = 0;
	g->first_ack_logged = false;
	g->capture_err[0] = 0;
	g->unprotected[0] = 0;
}

/* The timers guard_start() made; a run that ended took them off the loop. */
static void timers_add(struct guard *g)
{
	uint32_t ep = g->svc->epoch_interval_ms, hb = g->svc->heartbeat_interval_ms;
	uint32_t ls = hb / 2 ? hb / 2 : 1;
	struct timeval tv;

	tv = (struct timeval){.tv_sec = ep / 1000, .tv_usec = ep % 1000 * 1000};
	event_add(g->epoch_ev, &tv);
	tv = (struct timeval){.tv_sec = hb / 1000, .tv_usec = hb % 1000 * 1000};
	event_add(g->hb_ev, &tv);
	tv = (struct timeval){.tv_sec = ls / 1000, .tv_usec = ls % 1000 * 1000};
	event_add(g->lease_ev, &tv);
}

/* guard_start_service() failed half way: let go of what it took; the process runs on. */
static void undo(struct guard *g)
{
	keeper_stop(&g->keeper);
	capture_session_close(g->sess);
	g->sess = NULL;
	outcommit_close(g->oc);
	g->oc = NULL;
	if (g->exit_ev)
		event_del(g->exit_ev);
	g->adopted = false;
	g->pid = 0;
}

int guard_hold_adopted(struct guard *g, pid_t pid, uint64_t epoch)
{
	int r;

	reset_run(g);
	g->pid = pid;
	g->adopted = true;
	r = guard_start_service(g);
	if (r < 0) {
		undo(g);
		return r;
	}
	g->epoch = g->sent = epoch; /* the next epoch is epoch + 1, as the peer's image expects */
	g->sent_captured = false; /* restored at it: nothing tracked since, no delta on it */
	timers_add(g);
	return 0;
}
