/*
 * outcommit.h - output commit for one service (output_commit = on): every
 * packet the service sends is held on this host until the backup has
 * acknowledged the epoch that holds the state the packet reflects.
 *
 * The guard calls four hooks: outcommit_stop_point() just before an epoch
 * stops the service (what was sent until then belongs to that epoch),
 * outcommit_epoch() once that epoch is on its way, outcommit_acked() when the
 * backup acknowledges an epoch, and outcommit_close() when the guard ends.
 * Every hook takes NULL (output commit off) and does nothing then.
 *
 * When it cannot be set up or kept up, it says so once in the log and in
 * status (output_commit -1): the service then runs with its output unheld,
 * and nothing pretends otherwise.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct outcommit;
struct status_report;

/* Never NULL but for want of memory; a setup that failed is reported by outcommit_failed(). */
/* cgroup: the service's, in the cgroup v2 hierarchy (cgroup.h); its packets are held. */
struct outcommit *outcommit_open(struct event_base *base, const char *service,
				 const char *cgroup);

/* Opened with no cgroup: output commit is not in force, for this reason (logged once). */
void outcommit_refuse(struct outcommit *oc, const char *why);

/*
 * While no backup can hold the service's state (role swap: a service
 * adopted here before any backupd has answered, failover.c), holding its
 * packets would stop it answering until the other host is back: with
 * pass, they go as they come, and status says so (output_passing). Off
 * again once a backup answers: what is still queued then waits for the
 * first epoch it acknowledges.
 */
void outcommit_pass(struct outcommit *oc, bool pass);

void outcommit_stop_point(struct outcommit *oc);
void outcommit_epoch(struct outcommit *oc, uint64_t epoch);
void outcommit_acked(struct outcommit *oc, uint64_t epoch);

/*
 * True while an epoch is still unacknowledged: the next one should merge
 * into a later one. Held output waits for the ACK of the epoch after it,
 * and a backup slower than the epoch timer would otherwise acknowledge
 * further and further behind (epochs queue up before it, and so does
 * every reply); one epoch in flight bounds the wait to about one epoch's
 * capture, shipping, fsync and ACK plus an interval.
 */
bool outcommit_wait(const struct outcommit *oc, uint64_t sent, uint64_t acked);

/*
 * Release what acknowledged epochs hold, drop the rest and remove every
 * rule and queue. Call it once the service can send no more (killed, or
 * frozen for good): a packet it sent after the rules went would go unheld.
 */
void outcommit_close(struct outcommit *oc);

bool outcommit_failed(const struct outcommit *oc);
void outcommit_status_fill(const struct outcommit *oc, struct status_report *r);
