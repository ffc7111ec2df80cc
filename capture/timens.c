/*
 * timens.c - the clocks as the process sees them, recorded with every
 * capture so that the restored process's CLOCK_MONOTONIC and CLOCK_BOOTTIME
 * carry on from them (restore/timens.c), and CLOCK_REALTIME, which
 * tells the restore how long the process was away.
 *
 * A process in a time namespace sees the host's monotonic and boottime
 * clocks plus its namespace's offsets; the offsets are fixed once a process
 * has entered the namespace, so they are read once per namespace (by its
 * inode) and every capture adds them to our own clock readings. They are in
 * /proc/PID/timens_offsets, which shows the namespace the process's
 * children get: that is its own unless it called unshare(CLONE_NEWTIME)
 * after it started, in which case they are measured by reading the clocks
 * from inside it (an injected clock_gettime).
 */
#include <sys/syscall.h>
#include <time.h>

#include "capture.h"
#include "log.h"
#include "util.h"

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The process unshared a namespace it has not entered: ask its own clocks. */
static int measure_offsets(struct capture *c, int64_t off[2])
{
	static const clockid_t ids[2] = {CLOCK_MONOTONIC, CLOCK_BOOTTIME};
	uint64_t scratch;
	int r = capture_scratch_get(c, &scratch);
	if (r < 0)
		return r;
	for (int i = 0; i < 2; i++) {
		struct timespec ts;
		long ret;
		int64_t before = clock_ns(ids[i]);
		r = tracer_call(c->leader, &ret, SYS_clock_gettime, ids[i], scratch);
		int64_t after = clock_ns(ids[i]);
		if (r < 0 || ret < 0)
			return r < 0 ? r : (int)ret;
		r = tracer_peek(c->memfd, scratch, &ts, sizeof(ts));
		if (r < 0)
			return r;
		off[i] = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - before / 2 - after / 2;
	}
	return 0;
}

/* How far the process's clocks are from ours (both may be in time namespaces). */
static int clock_delta(struct capture *c, uint64_t ino, int64_t delta[2])
{
	int64_t theirs[2], ours[2];
	uint64_t self;
	int r = proc_ns_inode(0, "time", &self);

	delta[0] = delta[1] = 0;
	if (r < 0)
		return r;
	if (ino == self)
		return 0;
	r = proc_timens_offsets(0, ours);
	if (r < 0)
		return log_error_errno(r, "cannot read the offsets of primaryd's own time namespace");
	r = proc_timens_offsets(c->pid, theirs);
	if (r == -ENOTUNIQ) {
		r = measure_offsets(c, delta);
		if (r < 0)
			return log_error_errno(r, "cannot read the clocks of pid %d", c->pid);
		return 0;
	}
	if (r < 0)
		return log_error_errno(r, "cannot read the time namespace offsets of pid %d", c->pid);
	delta[0] = theirs[0] - ours[0];
	delta[1] = theirs[1] - ours[1];
	return 0;
}

int capture_clocks(struct capture *c)
{
	struct inject_cache *k = c->cache;
	struct image_clocks *ck = &c->img->clocks;
	int64_t delta[2];
	uint64_t ino;
	int r = proc_ns_inode(c->pid, "time", &ino);

	if (r < 0)
		return log_error_errno(r, "cannot find the time namespace of pid %d", c->pid);
	if (k && k->timens_ino == ino) {
		delta[0] = k->timens_delta[0];
		delta[1] = k->timens_delta[1];
	} else {
		r = clock_delta(c, ino, delta);
		if (r < 0)
			return r;
		if (k) {
			k->timens_ino = ino;
			k->timens_delta[0] = delta[0];
			k->timens_delta[1] = delta[1];
		}
	}
	ck->monotonic = clock_ns(CLOCK_MONOTONIC) + delta[0];
	ck->boottime = clock_ns(CLOCK_BOOTTIME) + delta[1];
	ck->realtime = clock_ns(CLOCK_REALTIME);
	return 0;
}
