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
 * serves: then that primaryd replicates to our own backupd, which says so
 * (its "connected" figure: in a ring of hosts our backupd's primary is the
 * peer). Asked on its status socket, waiting at most PEER_ASK_MS: a
 * backupd that does not answer tells nothing, and the start goes on. (A
 * peer primaryd that has not reconnected to our backupd yet is not seen.)
 */
#define PEER_ASK_MS 100

bool guard_peer_serves(const struct guard *g)
{
	double connected = 0;
	char err[256];
	int r;

	if (!g->svc->local_backupd)
		return false;
	r = status_read_value(g->svc->local_backupd, g->svc->name, "connected", PEER_ASK_MS,
			      &connected, err, sizeof(err));
	if (r < 0)
		log_info("%s: this host's backupd cannot say whether the peer serves (%s)",
			 g->svc->name, r == -ENOENT ? "no such service there" : err);
	return r >= 0 && connected == 1;
}
