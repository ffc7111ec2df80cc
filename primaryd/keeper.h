/*
 * keeper.h - the lease keeper: a small process that stops the service when
 * primaryd stops renewing its lease, whatever stopped primaryd (SIGSTOP, a
 * stuck event loop, a capture that never returns).
 *
 * primaryd's own lease timer freezes the service when the backup goes
 * silent; but a primaryd that does not run cannot freeze anything, and the
 * backup would then restore a second copy while the first still serves.
 * The keeper is forked by primaryd (PR_SET_PDEATHSIG, so it dies with it)
 * and shares one page with it: primaryd writes the lease deadline
 * (CLOCK_MONOTONIC) on every lease tick; the keeper sleeps until the
 * deadline, and if it has not moved, stops every thread of the service
 * with SIGSTOP (tgkill, thread by thread: a traced thread takes a
 * process-wide SIGSTOP alone, the others would run on). It sends SIGCONT
 * only once primaryd has moved the deadline past the present again.
 *
 * A service primaryd started dies with it by PR_SET_PDEATHSIG; one it
 * adopted (adopt.c: a process its backupd restored) is not its child, so
 * the keeper of an adopted service does that job: its own parent-death
 * signal is SIGHUP, on which it kills the service with SIGKILL, so the
 * service dies with its guard exactly like a started one.
 *
 * One writer per field: the deadline is primaryd's, the stopped flag the
 * keeper's.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct keeper_page;

struct keeper {
	pid_t pid;     /* the keeper process, 0 when none */
	pid_t service; /* the process it guards */
	struct keeper_page *page;
};

/*
 * Fork the keeper for service with the lease ending at deadline_us; with
 * kill_with_us it kills the service when primaryd dies. 0 or -errno.
 */
int keeper_start(struct keeper *k, pid_t service, uint64_t deadline_us, bool kill_with_us);

/* The keeper process has been reaped (the daemon's reaper): its pid is no longer ours. */
void keeper_reaped(struct keeper *k);

/* Move the deadline (now_us() + remaining lease); 0 stops the service at once. */
void keeper_renew(struct keeper *k, uint64_t deadline_us);

/* True while the keeper holds the service stopped. */
bool keeper_holds(const struct keeper *k);

/* Kill and reap the keeper, unmap the page; the service is let go (SIGCONT) if held. */
void keeper_stop(struct keeper *k);
