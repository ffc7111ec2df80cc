/*
 * priority.h - a daemon runs some nice steps ahead of the processes it
 * starts (services, restored services, hooks), which get nice 0 back.
 *
 * Both daemons' liveness depends on their loop getting the CPU when it
 * has a few ms of work: primaryd's epochs and heartbeats, backupd's
 * heartbeats (which renew the primary's lease) and the epochs it takes in.
 * At the services' own priority a busy service on the same CPU gets most
 * of it, and the daemon's loop waits tens or hundreds of ms for each ms
 * it runs.
 */
#pragma once

/*
 * Call before any thread or child is made: SCHED_RESET_ON_FORK gives every
 * one of them (the service, the lease keeper, hooks, worker threads) a
 * negative nice back as 0. Returns 0 or -errno; *nice: the nice aimed at.
 */
int priority_run_ahead(int steps, int *nice);

/*
 * Log the outcome of priority_run_ahead() (r, nice, steps as given to it), once the
 * configuration is good, so that a bad one gets its one error line only. risk: what a
 * daemon that could not run ahead may suffer on a busy CPU.
 */
void priority_say(int r, int nice, int steps, const char *risk);
