/*
 * failover.c - see failover.h: the backup's failover states and every
 * transition between them. The actions (fence hook, restore, takeover
 * hook, watching the restored process) are takeover.c's; this file
 * decides when they run and what follows.
 */
#include "failover.h"

#include <inttypes.h>

#include "daemon.h"
#include "journal.h"
#include "log.h"
#include "scope.h"
#include "service.h"
#include "peer.h"
#include "store.h"
#include "takeover.h"
#include "util.h"
#include "witness.h"

static uint64_t ms_to_us(uint32_t ms) { return (uint64_t)ms * 1000; }

const char *failover_state_name(enum failover_state state)
{
	switch (state) {
	case FAILOVER_WAITING:
		return "backup";
	case FAILOVER_FENCING:
		return "fencing";
	case FAILOVER_RESTORING:
		return "restoring";
	case FAILOVER_SERVING:
		return "serving";
	case FAILOVER_STOOD_DOWN:
		return "stood-down";
	}
	return "?";
}

static void enter(struct service *svc, enum failover_state state)
{
	svc->fo.state = state;
	daemon_status_changed(svc->d);
}

/*
 * Role swap: the process restored here has ended, with its guard or
 * deposed, so the next host takes over (or has): we back it up, but never
 * restore the epoch we restored a second time (restored_already()).
 */
static void backup_again(struct service *svc)
{
	struct failover *fo = &svc->fo;

	fo->restored_epoch = fo->served_epoch;
	fo->restored_incarnation = store_incarnation(svc->store);
	fo->heard_us = now_us();
	fo->state = FAILOVER_WAITING;
	log_info("%s: the service restored here (pid %d, epoch %" PRIu64 ") has ended: a backup "
		 "again, of whichever host serves now; that epoch is never restored twice",
		 svc->cfg->name, fo->pid, fo->served_epoch);
}

void failover_init(struct service *svc, uint64_t now)
{
	struct failover *fo = &svc->fo;
	pid_t pid;
	uint64_t epoch;

	/*
	 * A backup that has just started has not yet given its primary a chance
	 * to find it: a primary that lost us drops its silent link only after
	 * failover_timeout_ms (link.c) and then retries every half second. So
	 * no takeover for silence comes sooner than two failover timeouts after
	 * our start, or a restarted backupd would take over from a live primary
	 * that had not reconnected yet.
	 */
	*fo = (struct failover){.state = FAILOVER_WAITING,
				.heard_us = now,
				.last_tick_us = now,
				.quiet_until_us = now + 2 * ms_to_us(svc->cfg->failover_timeout_ms)};
	/*
	 * Pid 0 of a real epoch: a restore was under way when the daemon stopped.
	 * Its restorer died with us (PR_SET_PDEATHSIG), its husk with the
	 * restorer, and nothing restored runs before its pid is in the marker
	 * (takeover.c): nothing of it runs, so this is a backup again. (An
	 * unreadable marker reads as pid 0 of epoch 0 and stays "serving".)
	 */
	if (journal_serving(svc->journal, &pid, &epoch) && pid == 0 && epoch &&
	    journal_clear_serving(svc->journal) >= 0)
		log_warn("%s: a takeover's restore was under way when the daemon stopped; nothing "
			 "of it runs: back to backup, keeping epoch %" PRIu64,
			 svc->cfg->name, store_epoch(svc->store));
	if (journal_serving(svc->journal, &pid, &epoch)) {
		fo->state = FAILOVER_SERVING;
		fo->pid = pid;
		fo->served_epoch = epoch;
		/*
		 * Ours: the serving host holds the key. With role swap our primaryd
		 * holds it (handoff.c): taking it again would move it onto our lease,
		 * which its handover or stop could not release.
		 */
		witness_want(svc->witness, !svc->cfg->role_swap);
		log_warn("%s: serving here since an earlier run (pid %d, epoch %" PRIu64
			 "); remove %s/serving to make this host its backup again",
			 svc->cfg->name, pid, epoch, svc->dir);
		if (pid <= 0 || takeover_watch(svc, pid) < 0) {
			fo->pid_ended = true;
			log_warn("%s: the restored service (pid %d) is not running", svc->cfg->name,
				 pid);
			if (svc->cfg->role_swap)
				backup_again(svc);
		}
	} else if (journal_stood_down(svc->journal)) {
		fo->state = FAILOVER_STOOD_DOWN;
		log_info("%s: stopped everywhere by an operator; keeping the image of epoch %" PRIu64
			 " and not taking over",
			 svc->cfg->name, store_epoch(svc->store));
	} else if (store_meta(svc->store)) {
		takeover_prepare(svc); /* a takeover may come before the primary is heard */
	}
	uint64_t over, have = store_incarnation(svc->store);
	if (!journal_accept_new(svc->journal, &over))
		return;
	if (over && over != have) /* the image was replaced, and we stopped before clearing it */
		(void)journal_mark_accept_new(svc->journal, false, 0);
	else
		log_warn("%s: an operator's accept-new-incarnation is still to be used: the next "
			 "primary that runs another incarnation replaces the image of %016" PRIx64
			 " (epoch %" PRIu64 ")",
			 svc->cfg->name, have, store_epoch(svc->store));
}

/* ---------- restoring ---------- */

/*
 * With a witness, no takeover without the service's key: asks for it, and
 * says once while another holds it. True once it is ours.
 */
static bool have_key(struct service *svc)
{
	struct failover *fo = &svc->fo;

	if (!svc->witness)
		return true;
	witness_want(svc->witness, true);
	if (witness_holds(svc->witness, now_us())) {
		fo->key_wait_logged = false;
		return true;
	}
	if (!fo->key_wait_logged)
		log_warn("%s: not taking over before the witness's key is ours (%s%s%s)",
			 svc->cfg->name,
			 witness_holder(svc->witness)[0] ? "held by " : "asking etcd",
			 witness_holder(svc->witness),
			 witness_error(svc->witness)[0] ? "; the last request failed" : "");
	fo->key_wait_logged = true;
	return false;
}

static void start_restore(struct service *svc, enum failover_cause cause)
{
	struct failover *fo = &svc->fo;
	uint64_t epoch = store_epoch(svc->store);

	if (!have_key(svc)) {
		fo->key_pending = true;
		fo->key_cause = cause;
		fo->key_attaches = svc->attaches;
		return;
	}
	fo->key_pending = false;

	fo->cause = cause;
	fo->restore_started_us = now_us();
	enter(svc, FAILOVER_RESTORING);
	/* A silent primary is told, in case it is only slow; one that asked waits for the answer. */
	if (cause == FAILOVER_SILENCE && svc->peer)
		peer_close(svc->peer, WIRE_ERR_TAKEN_OVER, "backup is taking over");
	if (journal_mark_serving(svc->journal, 0, epoch) < 0) {
		failover_restore_failed(svc, -EIO);
		return;
	}
	takeover_start_restore(svc); /* done(pid) or failed(err), now or later */
}

/* The restored service as a unit of its own (scope.h); without systemd there is none to make. */
static void adopt_into_scope(struct service *svc, pid_t pid)
{
	char unit[256], err[512];
	int r = scope_adopt(svc->cfg->name, pid, unit, sizeof(unit), err, sizeof(err));

	if (r == 0)
		log_info("%s: restored pid %d runs in %s", svc->cfg->name, pid, unit);
	else if (r != -ENOMEDIUM)
		log_warn("%s: %s; it stays in the daemon's cgroup", svc->cfg->name, err);
}

void failover_restore_done(struct service *svc, pid_t pid)
{
	struct failover *fo = &svc->fo;
	uint64_t epoch = store_epoch(svc->store), took = (now_us() - fo->restore_started_us) / 1000;
	char reason[160];

	if (fo->state != FAILOVER_RESTORING)
		return;
	fo->pid = pid;
	fo->served_epoch = epoch;
	fo->pid_ended = false;
	fo->failures = 0;
	enter(svc, FAILOVER_SERVING);
	log_info("took over service %s: restored pid %d from epoch %" PRIu64 " in %" PRIu64 " ms%s",
		 svc->cfg->name, pid, epoch, took,
		 fo->cause == FAILOVER_HANDOVER ? " (handover)"
		 : fo->cause == FAILOVER_FRESH	? " (the primary restarted afresh)"
						: "");
	/* The process runs already: a marker that failed to record its pid still says "serving". */
	(void)journal_mark_serving(svc->journal, pid, epoch);
	fo->restored_epoch = 0;
	if (svc->peer) {
		snprintf(reason, sizeof(reason),
			 "backup has taken over: restored pid %d from epoch %" PRIu64 " in %" PRIu64
			 " ms",
			 pid, epoch, took);
		peer_close(svc->peer, WIRE_ERR_TAKEN_OVER, reason);
	}
	adopt_into_scope(svc, pid);
	if (takeover_watch(svc, pid) < 0)
		fo->pid_ended = true;
	takeover_run_hook(svc, pid, epoch);
	if (svc->cfg->role_swap && !fo->pid_ended)
		takeover_hand_off(svc, pid, epoch); /* this host becomes the primary */
}

void failover_restore_failed(struct service *svc, int err)
{
	struct failover *fo = &svc->fo;
	uint64_t epoch = store_epoch(svc->store);
	uint64_t backoff = ms_to_us(svc->cfg->failover_timeout_ms) << (fo->failures < 5 ? fo->failures : 5);
	char reason[256];

	if (fo->state != FAILOVER_RESTORING)
		return;
	if (backoff > ms_to_us(FAILOVER_MAX_BACKOFF_MS))
		backoff = ms_to_us(FAILOVER_MAX_BACKOFF_MS);
	fo->failures++;
	fo->backoff_ms = backoff / 1000;
	fo->retry_at_us = now_us() + backoff;
	log_error("%s: takeover failed: epoch %" PRIu64 " could not be restored (%s); the image is "
		  "kept; trying again in %u ms unless the primary is heard from first (%u failed in "
		  "a row)",
		  svc->cfg->name, epoch, strerror(-err), fo->backoff_ms, fo->failures);
	(void)journal_clear_serving(svc->journal);
	enter(svc, FAILOVER_WAITING);
	if (!svc->peer)
		return;
	snprintf(reason, sizeof(reason), "backup could not restore epoch %" PRIu64 ": %s", epoch,
		 strerror(-err));
	/* A primary that handed over runs its service again; a fresh one asks again later. */
	peer_close(svc->peer,
		      fo->cause == FAILOVER_HANDOVER ? WIRE_ERR_HANDOVER_FAILED : WIRE_ERR_OTHER,
		      reason);
}

void failover_service_ended(struct service *svc)
{
	svc->fo.pid_ended = true;
	if (svc->cfg->role_swap && svc->fo.state == FAILOVER_SERVING)
		backup_again(svc);
	daemon_status_changed(svc->d);
}

/*
 * Role swap: the image was restored here once (failover.h). True while it
 * still is that image; once the serving host has sent a newer epoch, the
 * marker goes and the image may be restored again.
 */
static bool restored_already(struct service *svc)
{
	struct failover *fo = &svc->fo;

	if (!fo->restored_epoch)
		return false;
	if (store_incarnation(svc->store) == fo->restored_incarnation &&
	    store_epoch(svc->store) <= fo->restored_epoch)
		return true;
	log_info("%s: the image now holds epoch %" PRIu64 " from the serving host, newer than the "
		 "epoch %" PRIu64 " restored here: the serving marker goes",
		 svc->cfg->name, store_epoch(svc->store), fo->restored_epoch);
	(void)journal_clear_serving(svc->journal);
	fo->restored_epoch = fo->restored_incarnation = 0;
	return false;
}

uint64_t failover_would_restore(const struct service *svc)
{
	const struct failover *fo = &svc->fo;
	uint64_t epoch = store_epoch(svc->store);

	if (fo->state != FAILOVER_WAITING || !store_meta(svc->store) || !epoch)
		return 0;
	if (fo->restored_epoch && store_incarnation(svc->store) == fo->restored_incarnation &&
	    epoch <= fo->restored_epoch)
		return 0; /* restored_already(), without its clearing */
	return epoch;
}

/* ---------- fencing ---------- */

static void start_fence(struct service *svc, uint64_t silent_us)
{
	log_warn("%s: nothing heard from the primary for %" PRIu64 " ms: running the fence hook",
		 svc->cfg->name, silent_us / 1000);
	if (takeover_start_fence(svc) < 0) {
		svc->fo.retry_at_us = now_us() + ms_to_us(svc->cfg->heartbeat_interval_ms);
		return;
	}
	enter(svc, FAILOVER_FENCING);
}

void failover_fence_done(struct service *svc, bool ok)
{
	if (svc->fo.state != FAILOVER_FENCING)
		return;
	if (ok) {
		log_info("%s: fence hook succeeded: the primary is fenced", svc->cfg->name);
		start_restore(svc, FAILOVER_SILENCE);
		return;
	}
	svc->fo.retry_at_us = now_us() + ms_to_us(svc->cfg->heartbeat_interval_ms);
	enter(svc, FAILOVER_WAITING);
}

/* ---------- silence ---------- */

void failover_heard(struct service *svc, uint64_t at_us)
{
	if (at_us > svc->fo.heard_us)
		svc->fo.heard_us = at_us;
}

void failover_tick(struct service *svc)
{
	struct failover *fo = &svc->fo;
	uint64_t now = now_us(), silent;

	/* We stalled ourselves (SIGSTOP, a stuck disk, the host): what we missed says nothing. */
	if (now - fo->last_tick_us > ms_to_us(svc->cfg->lease_ms) && fo->state == FAILOVER_WAITING) {
		log_warn("%s: backupd itself was stalled for %" PRIu64
			 " ms: starting a fresh failover timeout",
			 svc->cfg->name, (now - fo->last_tick_us) / 1000);
		failover_heard(svc, now);
	}
	fo->last_tick_us = now;
	if (fo->state != FAILOVER_WAITING)
		return;
	/*
	 * The primary vouched (or was silent): only the key is missing. A primary
	 * accepted since (a handover that failed and came back, say) ends the wait:
	 * that one serves, and its key is its own.
	 */
	if (fo->key_pending && svc->attaches != fo->key_attaches) {
		log_info("%s: a primary attached again: no longer waiting for the key to take over",
			 svc->cfg->name);
		fo->key_pending = false;
	}
	if (fo->key_pending) {
		start_restore(svc, fo->key_cause);
		return;
	}
	if (svc->peer && peer_read_paused(svc->peer))
		failover_heard(svc, now); /* we stopped listening, it did not stop talking */
	if (svc->peer && peer_has_unread(svc->peer))
		return; /* what it sent decides, once read: the read callback runs next */
	if (restored_already(svc))
		return; /* that copy ran here already; a newer epoch must come first */
	silent = now > fo->heard_us ? now - fo->heard_us : 0;
	/*
	 * We ask etcd for the key from the moment we stop renewing the primary's
	 * lease: while its own lease on the key lives etcd refuses us, and once
	 * it has expired the key is ready for the takeover at the failover
	 * timeout. Heard again, we let it go. Without an image there is nothing
	 * to take over and no key to want: with role swap this host's primaryd
	 * may hold it under the same name, and we would claim it in status.
	 */
	if (failover_renews_lease(svc, now)) {
		witness_want(svc->witness, false);
		fo->key_wait_logged = false;
	} else {
		witness_want(svc->witness, store_epoch(svc->store) > 0);
	}
	if (!store_epoch(svc->store) || silent < ms_to_us(svc->cfg->failover_timeout_ms) ||
	    now < fo->retry_at_us || now < fo->quiet_until_us)
		return;
	if (!have_key(svc))
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
	start_restore(svc, FAILOVER_SILENCE);
}

/* ---------- the primary asks ---------- */

void failover_handover(struct service *svc, uint64_t epoch)
{
	uint64_t have = store_epoch(svc->store);
	char reason[160];

	if (svc->fo.state != FAILOVER_WAITING || epoch != have || restored_already(svc)) {
		snprintf(reason, sizeof(reason),
			 "handover of epoch %" PRIu64 " refused: backup is %s with epoch %" PRIu64,
			 epoch, failover_state_name(svc->fo.state), have);
		log_warn("%s: %s", svc->cfg->name, reason);
		if (svc->peer)
			peer_close(svc->peer, WIRE_ERR_HANDOVER_FAILED, reason);
		return;
	}
	log_info("%s: the primary hands over at epoch %" PRIu64 ": restoring now", svc->cfg->name,
		 epoch);
	start_restore(svc, FAILOVER_HANDOVER);
}

void failover_take_over_now(struct service *svc, const char *why)
{
	if (svc->fo.state != FAILOVER_WAITING)
		return;
	if (now_us() < svc->fo.retry_at_us) {
		if (svc->peer)
			peer_close(svc->peer, WIRE_ERR_OTHER,
				      "backup's last restore failed; it tries again after its back-off");
		return;
	}
	if (restored_already(svc)) {
		log_error("%s: %s, but epoch %" PRIu64 " was restored here once already: not again "
			  "(the host that served it last may hold newer epochs)",
			  svc->cfg->name, why, svc->fo.restored_epoch);
		if (svc->peer)
			peer_close(svc->peer, WIRE_ERR_OTHER,
				   "backup's image was restored once already; it restores no copy "
				   "twice");
		return;
	}
	log_warn("%s: %s: taking over now", svc->cfg->name, why);
	start_restore(svc, FAILOVER_FRESH);
}

void failover_stand_down(struct service *svc)
{
	uint64_t epoch = store_epoch(svc->store);
	char reason[160];

	if (svc->fo.state != FAILOVER_WAITING && svc->fo.state != FAILOVER_STOOD_DOWN)
		return;
	(void)journal_mark_stood_down(svc->journal, true);
	enter(svc, FAILOVER_STOOD_DOWN);
	snprintf(reason, sizeof(reason),
		 "backup stood down: it will not take over; the image of epoch %" PRIu64 " is kept",
		 epoch);
	log_info("%s: the service was stopped everywhere: %s", svc->cfg->name, reason);
	if (svc->peer)
		peer_close(svc->peer, WIRE_ERR_STOOD_DOWN, reason);
}

int failover_accept_new_incarnation(struct service *svc)
{
	uint64_t have = store_incarnation(svc->store);
	int r = journal_mark_accept_new(svc->journal, true, have);

	if (r < 0)
		return r;
	log_warn("%s: an operator accepts a new incarnation: the next primary that runs another "
		 "incarnation replaces the image of %016" PRIx64 " (epoch %" PRIu64 ")",
		 svc->cfg->name, have, store_epoch(svc->store));
	return 0;
}

const char *failover_may_replace_image(const struct service *svc)
{
	uint64_t over;

	if (svc->fo.state == FAILOVER_STOOD_DOWN)
		return "the service was stopped everywhere";
	if (journal_accept_new(svc->journal, &over) &&
	    (!over || over == store_incarnation(svc->store)))
		return "an operator accepted a new incarnation";
	return NULL;
}

void failover_primary_replaced(struct service *svc)
{
	uint64_t over;

	if (journal_accept_new(svc->journal, &over) &&
	    journal_mark_accept_new(svc->journal, false, 0) == 0)
		log_info("%s: the operator's accept-new-incarnation is used", svc->cfg->name);
	if (svc->fo.state != FAILOVER_STOOD_DOWN)
		return;
	(void)journal_mark_stood_down(svc->journal, false);
	svc->fo.heard_us = now_us();
	enter(svc, FAILOVER_WAITING);
}

/* ---------- questions ---------- */

enum wire_error_code failover_refuses_primary(const struct service *svc, const char **why)
{
	switch (svc->fo.state) {
	case FAILOVER_SERVING:
		*why = "backup has taken over";
		return WIRE_ERR_TAKEN_OVER;
	case FAILOVER_FENCING:
	case FAILOVER_RESTORING:
		*why = "backup is taking over";
		return WIRE_ERR_TAKEN_OVER;
	case FAILOVER_WAITING:
	case FAILOVER_STOOD_DOWN:
		break;
	}
	return 0;
}

/*
 * Our heartbeat renews the primary's lease, so we stop sending it well
 * before we could take over: once the primary has been silent for
 * failover_timeout - lease - one heartbeat interval. A primary that hears
 * nothing more from us freezes its service one lease later, which is
 * before our failover timeout runs out, so there is no moment in which both
 * copies serve.
 */
bool failover_renews_lease(const struct service *svc, uint64_t now)
{
	const struct service_config *cfg = svc->cfg;
	uint64_t quiet_us = ms_to_us(cfg->failover_timeout_ms - cfg->lease_ms -
				     cfg->heartbeat_interval_ms);

	if (svc->fo.state != FAILOVER_WAITING && svc->fo.state != FAILOVER_STOOD_DOWN)
		return false;
	return now < svc->fo.heard_us || now - svc->fo.heard_us <= quiet_us;
}
