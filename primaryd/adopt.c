/*
 * adopt.c - role swap (config.h, role_swap = on): a service that this
 * host's backupd has restored becomes this primaryd's to protect, toward
 * the next of its hosts. backupd/handoff.c sends, on our control socket,
 * `adopt NAME PID INCARNATION EPOCH`: the restored pid, the incarnation
 * it continues and the epoch it was restored from.
 *
 * Why a hand-off rather than a guard inside backupd: the guard (epochs,
 * lease and keeper, output commit, the failover states) stays one
 * implementation; backupd only restores and records what it restored.
 *
 * The adopted process is guarded exactly like one we started: seized for
 * each epoch and let go between, and it dies with us, by its lease keeper
 * (keeper.h), where a started one dies by PR_SET_PDEATHSIG. Its epochs
 * carry on from the epoch it was restored from, in its own incarnation, so
 * the peer's backupd takes them over its older image of the same run. The
 * lease is waived until a backupd answers (failover.h, standby): with the
 * peer host down nobody could renew it, and the service must serve.
 * A primaryd still starting (the peer's backupd never answered) adopts
 * too: nothing runs here, and our backupd has found the peer silent.
 */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "guard.h"
#include "log.h"
#include "outcommit.h"
#include "status.h"
#include "util.h"

/* The pid must run the service's program, or we would guard (and kill) someone else's. */
static int check_program(const struct guard *g, pid_t pid, char *err, size_t errlen)
{
	const char *want = g->svc->executable ? g->svc->executable : g->svc->command.argv[0];
	char link[64], exe[PATH_MAX], real[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/%d/exe", pid);
	n = readlink(link, exe, sizeof(exe) - 1);
	if (n < 0) {
		snprintf(err, errlen, "no process %d: %s", pid, strerror(errno));
		return -ESRCH;
	}
	exe[n] = 0;
	if (strcmp(exe, want) != 0 && (!realpath(want, real) || strcmp(exe, real) != 0)) {
		snprintf(err, errlen, "pid %d runs %s, not the service's %s", pid, exe, want);
		return -EPERM;
	}
	return 0;
}

int guard_adopt(struct guard *g, pid_t pid, uint64_t incarnation, uint64_t epoch, char *err,
		size_t errlen)
{
	int r;

	if (!g->svc->role_swap) {
		snprintf(err, errlen, "%s: role_swap is off in %s: nothing is adopted", g->svc->name,
			 g->svc->path);
		return -EPERM;
	}
	/* Starting: nothing runs here yet, and the peer's backupd has not answered (it is down). */
	if ((g->fo.state != PFAILOVER_STANDBY && g->fo.state != PFAILOVER_STARTING) || g->sess) {
		snprintf(err, errlen, "%s: this primaryd is %s (pid %d), not standby", g->svc->name,
			 pfailover_state_name(g->fo.state), g->pid);
		return -EBUSY;
	}
	if (!incarnation || pid <= 0) {
		snprintf(err, errlen, "%s: adopt needs a pid and an incarnation", g->svc->name);
		return -EINVAL;
	}
	r = check_program(g, pid, err, errlen);
	if (r < 0)
		return r;
	link_close(g, "adopting a restored service"); /* a starting one's HELLO said fresh */
	r = guard_hold_adopted(g, pid, epoch); /* seize, capture session, keeper, timers */
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot guard pid %d: %s", g->svc->name, pid, strerror(-r));
		pfailover_adoption_failed(g);
		return r;
	}
	pfailover_adopted(g, incarnation);
	link_connect(g);
	return 0;
}

/*
 * A fresh start is for a service that runs nowhere. The peer's backupd
 * answering our HELLO says it holds nothing of a run, but a backupd that
 * lost its state directory would say so too while the peer's primaryd
 * serves. Our own backupd knows better, asked on its status socket
 * (waiting at most PEER_ASK_MS a question):
 * - its primary (in a ring of hosts, the peer's primaryd) is connected:
 *   the peer serves;
 * - it holds an image of a run it would restore (would_restore): the run
 *   lives on, there (its primaryd has not reconnected to our backupd yet,
 *   as when both hosts' daemons restart at once: it retries every half
 *   second) or from here, once our backupd finds it silent and hands it
 *   to us; a fresh copy would be a second one, or lose that state;
 * - it does not answer (it starts with us, at boot): nothing is known, and
 *   we ask again later rather than start.
 */
#define PEER_ASK_MS 100

enum peer_answer guard_peer_serves(const struct guard *g, char *why, size_t whylen)
{
	double connected = 0, would = NAN;
	char err[256] = "";
	int r;

	if (!g->svc->local_backupd)
		return PEER_RUNS_NOWHERE;
	r = status_read_value(g->svc->local_backupd, g->svc->name, "connected", PEER_ASK_MS,
			      &connected, err, sizeof(err));
	if (r == -ENOENT) {
		log_info("%s: this host's backupd has no such service: the start goes on",
			 g->svc->name);
		return PEER_RUNS_NOWHERE;
	}
	if (r < 0) {
		snprintf(why, whylen, "this host's backupd (%s) does not answer: %s",
			 g->svc->local_backupd, err);
		return PEER_UNKNOWN;
	}
	if (connected == 1) {
		snprintf(why, whylen, "the peer's primaryd replicates the service to this host's "
			 "backupd: it serves there");
		return PEER_SERVES;
	}
	r = status_read_value(g->svc->local_backupd, g->svc->name, "would_restore", PEER_ASK_MS,
			      &would, err, sizeof(err));
	/* -EINVAL: the row has no value (none to restore); -ENOENT: an older backupd */
	if (r < 0 && r != -ENOENT && r != -EINVAL) {
		snprintf(why, whylen, "this host's backupd (%s) does not answer: %s",
			 g->svc->local_backupd, err);
		return PEER_UNKNOWN;
	}
	if (r >= 0 && would == would && would > 0) {
		snprintf(why, whylen, "this host's backupd holds the run's epoch %.0f, which it "
			 "restores if the peer stays silent", would);
		return PEER_SERVES;
	}
	return PEER_RUNS_NOWHERE;
}
