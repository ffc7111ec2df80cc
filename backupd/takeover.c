/*
 * takeover.c - see takeover.h.
 *
 * A fence hook that has exited 0 has, by its contract, stopped the primary:
 * the takeover then goes on even if the primary spoke while it ran.
 *
 * The "serving" marker is written (pid 0) before the restore starts, gets
 * the restored pid before that process may run (on_ready), and is cleared
 * if the restore fails. A daemon that dies in between leaves pid 0 and no
 * process (the restorer dies with it): takeover_resume() then goes back to
 * backup. A marker with a pid names a process that did run: if it is gone,
 * an operator decides, since it may have served writes the image lacks.
 */
#include "takeover.h"

#include <inttypes.h>
#include <signal.h>

#include "child.h"
#include "daemon.h"
#include "journal.h"
#include "log.h"
#include "restore/restore.h"
#include "restorer.h"
#include "service.h"
#include "session.h"
#include "store.h"
#include "util.h"

#define HOOK_TIMEOUT_MS 60000 /* a hook that hangs must not hold the takeover forever */

static uint64_t ms_to_us(uint32_t ms) { return (uint64_t)ms * 1000; }

/* ---------- after the restore ---------- */

static void on_service_ended(pid_t pid, int status, void *arg)
{
	struct service *svc = arg;
	char how[128];

	svc->watch = NULL;
	svc->pid_ended = true;
	log_warn("%s: the restored service (pid %d) has %s", svc->cfg->name, pid,
		 child_describe(status, how, sizeof(how)));
	daemon_status_changed(svc->d);
}

static void watch_service(struct service *svc)
{
	int r = child_watch(svc->d->base, svc->pid, on_service_ended, svc, &svc->watch);

	if (r == -ESRCH) {
		svc->pid_ended = true;
		log_warn("%s: the restored service (pid %d) is not running", svc->cfg->name,
			 svc->pid);
	} else if (r < 0) {
		log_warn("%s: cannot watch the restored service (pid %d): %s", svc->cfg->name,
			 svc->pid, strerror(-r));
	}
}

static void on_hook_done(pid_t pid, int status, void *arg)
{
	struct service *svc = arg;
	char how[128];

	(void)pid;
	svc->hook = NULL;
	child_describe(status, how, sizeof(how));
	if (status == 0)
		log_info("%s: takeover hook done", svc->cfg->name);
	else
		log_error("%s: takeover hook '%s' %s", svc->cfg->name, svc->cfg->takeover_hook.line,
			  how);
}

static void run_takeover_hook(struct service *svc)
{
	char env_service[WIRE_MAX_NAME + 32], env_pid[48], env_epoch[48];
	char *env[] = {env_service, env_pid, env_epoch, NULL};
	int r;

	if (!svc->cfg->takeover_hook.argc)
		return;
	snprintf(env_service, sizeof(env_service), "CHECKSYNC_SERVICE=%s", svc->cfg->name);
	snprintf(env_pid, sizeof(env_pid), "CHECKSYNC_PID=%d", svc->pid);
	snprintf(env_epoch, sizeof(env_epoch), "CHECKSYNC_EPOCH=%" PRIu64, svc->served_epoch);
	r = child_spawn(svc->d->base, svc->cfg->takeover_hook.argv, env, HOOK_TIMEOUT_MS,
			on_hook_done, svc, &svc->hook);
	if (r < 0)
		log_error("%s: cannot run the takeover hook '%s': %s", svc->cfg->name,
			  svc->cfg->takeover_hook.line, strerror(-r));
}

/* ---------- the restore ---------- */

static void try_later(struct service *svc, uint32_t ms)
{
	svc->state = SERVICE_BACKUP;
	svc->retry_at_us = now_us() + ms_to_us(ms);
	daemon_status_changed(svc->d);
}

static void on_restored(pid_t pid, int err, const char *why, void *arg);

/* Rebuilt and still held: the marker names the pid before the process may run. */
static int on_ready(pid_t pid, void *arg)
{
	struct service *svc = arg;
	int r = journal_mark_serving(svc->journal, pid, svc->takeover_epoch);

	if (r < 0)
		log_error_errno(r, "%s: cannot record pid %d as serving", svc->cfg->name, pid);
	return r;
}

/* Off the event loop (restorer.h); on_restored() hears how it went. */
static int restore_warm_image(struct service *svc)
{
	struct image img;
	char err[512];
	int r = store_build_image(svc->store, &img);

	if (r < 0)
		return log_error_errno(r, "%s: cannot assemble the image", svc->cfg->name);
	r = image_validate(&img, err, sizeof(err));
	if (r < 0)
		log_error("%s: the image is not restorable: %s", svc->cfg->name, err);
	else if ((r = restorer_start(svc->d->base, &img, RESTORER_DEADLINE_MS, on_ready, on_restored,
				     svc, &svc->restorer)) < 0)
		log_error_errno(r, "%s: cannot start the restore", svc->cfg->name);
	store_release_image(&img); /* the restorer's child has its own copy */
	return r;
}

static void take_over(struct service *svc)
{
	uint64_t epoch = store_epoch(svc->store);
	uint32_t retry_ms = svc->cfg->failover_timeout_ms;

	if (svc->session)
		session_close(svc->session, "backup is taking over");
	if (journal_mark_serving(svc->journal, 0, epoch) < 0) {
		try_later(svc, retry_ms);
		return;
	}
	svc->takeover_started_us = now_us();
	svc->takeover_epoch = epoch;
	if (restore_warm_image(svc) < 0) {
		on_restored(0, -EIO, "it could not be started", svc);
		return;
	}
	svc->state = SERVICE_RESTORING;
	daemon_status_changed(svc->d);
}

static void on_restored(pid_t pid, int err, const char *why, void *arg)
{
	struct service *svc = arg;
	uint64_t epoch = svc->takeover_epoch;
	uint32_t retry_ms = svc->cfg->failover_timeout_ms;

	svc->restorer = NULL;
	if (err < 0) {
		log_error("%s: takeover failed: epoch %" PRIu64 " could not be restored (%s); "
			  "keeping the image and trying again in %u ms",
			  svc->cfg->name, epoch, why, retry_ms);
		(void)journal_clear_serving(svc->journal);
		try_later(svc, retry_ms);
		return;
	}
	svc->state = SERVICE_SERVING;
	svc->pid = pid;
	svc->served_epoch = epoch;
	log_info("took over service %s: restored pid %d from epoch %" PRIu64 " in %" PRIu64 " ms",
		 svc->cfg->name, pid, epoch, (now_us() - svc->takeover_started_us) / 1000);
	watch_service(svc); /* on_ready() has recorded the pid */
	run_takeover_hook(svc);
	daemon_status_changed(svc->d);
}

/* ---------- fencing ---------- */

static void on_fence_done(pid_t pid, int status, void *arg)
{
	struct service *svc = arg;
	char how[128];

	(void)pid;
	svc->fence = NULL;
	if (status == 0) {
		log_info("%s: fence hook succeeded: the primary is fenced", svc->cfg->name);
		take_over(svc);
		return;
	}
	log_warn("%s: fence hook '%s' %s; trying again in %u ms", svc->cfg->name,
		 svc->cfg->fence_hook.line, child_describe(status, how, sizeof(how)),
		 svc->cfg->heartbeat_interval_ms);
	try_later(svc, svc->cfg->heartbeat_interval_ms);
}

static void start_fence(struct service *svc, uint64_t silent_us)
{
	char env_service[WIRE_MAX_NAME + 32];
	char *env[] = {env_service, NULL};
	int r;

	snprintf(env_service, sizeof(env_service), "CHECKSYNC_SERVICE=%s", svc->cfg->name);
	log_warn("%s: nothing heard from the primary for %" PRIu64 " ms: running the fence hook",
		 svc->cfg->name, silent_us / 1000);
	r = child_spawn(svc->d->base, svc->cfg->fence_hook.argv, env, HOOK_TIMEOUT_MS,
			on_fence_done, svc, &svc->fence);
	if (r < 0) {
		log_error("%s: cannot run the fence hook '%s': %s; trying again in %u ms",
			  svc->cfg->name, svc->cfg->fence_hook.line, strerror(-r),
			  svc->cfg->heartbeat_interval_ms);
		try_later(svc, svc->cfg->heartbeat_interval_ms);
		return;
	}
	svc->state = SERVICE_FENCING;
	daemon_status_changed(svc->d);
}

/* ---------- the decision ---------- */

void takeover_tick(struct service *svc)
{
	uint64_t now = now_us(), silent;

	if (svc->state != SERVICE_BACKUP)
		return;
	if (svc->session && session_read_paused(svc->session))
		service_heard(svc); /* we stopped listening, it did not stop talking */
	silent = now - svc->last_heard_us;
	if (!store_epoch(svc->store) || silent < ms_to_us(svc->cfg->failover_timeout_ms) ||
	    now < svc->retry_at_us)
		return;
	if (svc->cfg->fence_hook.argc) {
		start_fence(svc, silent);
		return;
	}
	/* No fence: the primary froze its service once its lease ran out without us. */
	if (silent < ms_to_us(svc->cfg->lease_ms))
		return;
	log_warn("%s: nothing heard from the primary for %" PRIu64
		 " ms, its lease of %u ms has run out: taking over",
		 svc->cfg->name, silent / 1000, svc->cfg->lease_ms);
	take_over(svc);
}

/* After a reboot the pid may be someone else's: it is ours only if it runs the image's binary. */
static bool runs_the_image(const struct service *svc)
{
	const struct image *meta = store_meta(svc->store);
	char link[64], exe[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/%d/exe", svc->pid);
	n = readlink(link, exe, sizeof(exe) - 1);
	if (n < 0)
		return false;
	exe[n] = 0;
	return !meta || !meta->exe || strcmp(exe, meta->exe) == 0;
}

void takeover_resume(struct service *svc)
{
	/*
	 * Pid 0: a restore was under way when the daemon stopped. Its restorer
	 * died with us (PR_SET_PDEATHSIG) and its husk with the restorer, and
	 * nothing restored runs before its pid is recorded (on_ready): nothing
	 * of it runs, so this is a backup again and the takeover can be retried.
	 * (An unreadable marker reads as pid 0 of epoch 0 and stays "serving".)
	 */
	if (svc->pid == 0 && svc->served_epoch && journal_clear_serving(svc->journal) >= 0) {
		log_warn("%s: a takeover's restore was under way when the daemon stopped; nothing "
			 "of it runs: back to backup, keeping epoch %" PRIu64, svc->cfg->name,
			 store_epoch(svc->store));
		svc->state = SERVICE_BACKUP;
		return;
	}
	svc->state = SERVICE_SERVING;
	log_warn("%s: serving here since an earlier run (pid %d, epoch %" PRIu64
		 "); remove %s/serving to make this host its backup again",
		 svc->cfg->name, svc->pid, svc->served_epoch, svc->dir);
	if (svc->pid > 0 && runs_the_image(svc)) {
		watch_service(svc);
		return;
	}
	svc->pid_ended = true;
	log_warn("%s: the restored service (pid %d) is not running", svc->cfg->name, svc->pid);
}
