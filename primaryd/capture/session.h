/*
 * session.h - a process guarded for replication: held with ptrace for as
 * long as primaryd runs (PTRACE_O_EXITKILL, so it dies with us), captured
 * once per epoch, each epoch carrying only what changed.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capture.h"
#include "dirty.h"
#include "wp.h"

struct epoch_report {
	uint64_t epoch;
	uint64_t pause_us;
	uint64_t pages_captured, pages_shipped;
	const char *mode;
	unsigned safepoint_tries, fallback;
};

struct capture_session {
	struct capture c;
	struct dirty_table shipped; /* what the backup holds, by page hash */
	uint8_t *staging;
	uint64_t staging_len;
	struct file_cache files; /* hashes of mapped files, kept between epochs */
	bool frozen;
	bool hold_after_epoch; /* the next epoch leaves the process frozen (a final epoch) */
	bool use_wp; /* dirty tracking by userfaultfd write-protect, else by page hashes */
	struct inject_cache cache;
	struct wp_tracker wp;
};

/* debug_file: the service's debug_file, or NULL (see goruntime.h); it must outlive the session. */
int capture_session_open(pid_t pid, const char *debug_file, struct capture_session **out);
void capture_session_close(struct capture_session *s);

/*
 * Stop the process, capture it, let it run, and return an image whose pages
 * are only those changed since the last epoch (all of them when full).
 */
int capture_session_epoch(struct capture_session *s, bool full, struct image **out,
			  struct epoch_report *rep);

/* Hold the process stopped (lease lost) and let it go again. */
int capture_session_freeze(struct capture_session *s);
int capture_session_thaw(struct capture_session *s);

/*
 * Handle ptrace stops that arrive between epochs (signals for the service
 * are passed on). Returns 1 when the service has exited (*status set), else 0.
 */
int capture_session_reap(struct capture_session *s, int *status);
