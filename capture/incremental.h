/*
 * incremental.h - a process guarded for replication: held with ptrace for as
 * long as primaryd runs (PTRACE_O_EXITKILL, so it dies with us), captured
 * once per epoch, each epoch carrying only what changed.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capture.h"
#include "delta.h"
#include "dirty.h"
#include "hist.h"
#include "precopy.h"
#include "ship_trace.h"
#include "shipped.h"
#include "wp.h"

/*
 * The epoch cost breakdown, kept as a feature (status, metrics, bench/):
 * the pause by phase, then the work after the service runs again. The
 * link (primaryd/link.c) fills the pack and TLS-write figures.
 */
enum cost_phase {
	COST_STOP,	 /* PTRACE_SEIZE/INTERRUPT of every thread */
	COST_SAFEPOINT,	 /* CPH_* of capture_held(), in order */
	COST_LIVE_SET,
	COST_DIRTY_SCAN,
	COST_THREADS,
	COST_COPY,
	COST_FDS,
	COST_RESUME,	 /* letting every thread go */
	COST_PAUSE,	 /* the whole stop, as the service feels it */
	COST_ENCODE,	 /* after resume: file hashes, page selection, deltas against the cache */
	COST_COMPRESS,	 /* the codec over the delta payload */
	COST_PACK,	 /* msgpack and the epoch checksum */
	COST_TLS_WRITE,	 /* from the epoch queued to its last byte handed to the kernel (wall) */
	COST_PRECOPY,	 /* a pre-copy round, with the service running (wall, primaryd's loop) */
	COST_REACH,	 /* after resume: which new objects are reachable (reach.c) */
	COST_CPU_SAFEPOINT, /* primaryd's thread CPU time in each CPH_* phase, in order */
	COST_CPU_LIVE_SET,
	COST_CPU_DIRTY_SCAN,
	COST_CPU_THREADS,
	COST_CPU_COPY,
	COST_CPU_FDS,
	COST_COUNT
};

struct session_cost {
	struct hist h[COST_COUNT];
};

/*
 * One DELTA message's worth of the epoch's pages (wire.h), encoded against
 * the cache of what was last shipped, and compressed.
 */
struct delta_batch {
	uint32_t npages, raw_len, codec;
	uint8_t *data;
	size_t len;
};

struct delta_stats {
	uint64_t pages[DELTA_KINDS]; /* by enum delta_kind */
	uint64_t raw_bytes, wire_bytes, page_bytes;
};

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
	struct session_cost cost;
	struct precopy pre; /* rounds for the next epoch (precopy.h), when use_precopy */
	bool use_precopy;
	/*
	 * Opening write tracking for the rounds failed once (no userfaultfd, say):
	 * the rounds wait for an epoch's own capture to open it, and that capture
	 * reports the failure, once per change (UNPROTECTED), not the rounds.
	 */
	bool precopy_open_failed;
	uint64_t round_t0;
	uint64_t gc_wait_from; /* when the rounds first waited for a GC cycle to end */
	bool whole_next;       /* the GC cycle outlasted the wait: copy whole mappings */

	/* deltas: on when the cache has room (delta_cache_mb) */
	struct shipped_cache shipped_pages;
	unsigned codec; /* enum delta_codec */
	uint8_t *raw;	/* WIRE_MAX_DELTA_RAW bytes: the batch being encoded */
	uint32_t batch_pages;
	size_t batch_raw;
	bool enc_full;
	uint64_t enc_start_us, enc_compress_us; /* for the cost breakdown */
	struct delta_stats delta;
	struct ship_trace trace; /* CHECKSYNC_DEBUG_SHIP_TRACE, for bench/ship_micro.c */
	uint64_t spans_read, spans_kept; /* live.c's span cache, over all epochs */
	uint64_t spans_refreshed;	 /* mspans the pre-copy rounds read again for it */
	uint64_t fds_read, fds_kept;	 /* fds.c's socket cache, over all epochs */
	uint64_t threads_read, threads_kept; /* threads.c's per-thread cache, over all epochs */

	/* The work after the resume, under way in steps (capture_session_epoch_step). */
	bool after_pending;
	bool after_full, after_precopied;
	uint64_t after_ran_us; /* when the service ran again */
	struct epoch_report after_rep;
};

/*
 * Deltas of the epoch's pages, one batch (DELTA message) at a time, after
 * capture_session_epoch() returned the image: begin, add at most
 * WIRE_MAX_DELTA_PAGES pages in the image's order, end (compresses into
 * *b, whose data the caller frees).
 */
void capture_session_batch_begin(struct capture_session *s);
void capture_session_batch_add(struct capture_session *s, uint64_t addr, const uint8_t *page);
int capture_session_batch_end(struct capture_session *s, struct delta_batch *b);

/* Ship sub-page deltas against a cache of cache_bytes (0: whole pages), compressed with codec. */
int capture_session_set_deltas(struct capture_session *s, uint64_t cache_bytes, unsigned codec);

/* debug_file: the service's debug_file, or NULL (see goruntime.h); it must outlive the session. */
int capture_session_open(pid_t pid, const char *debug_file, struct capture_session **out);
void capture_session_close(struct capture_session *s);
/* Free an image capture_session_epoch() gave, once shipped: the staging
 * buffer it borrowed stays the session's, a pre-copy store it took is kept
 * for the next epoch's rounds. */
void capture_session_image_free(struct capture_session *s, struct image *img);

/*
 * Stop the process, capture it, let it run, and return an image whose pages
 * are only those changed since the last epoch (all of them when full).
 * Returns 0 with *out and *rep, or 1 when the work after the resume (the
 * reach scan) goes on in steps: then capture_session_epoch_step() until it
 * returns 0 with *out and *rep; no other capture (nor pre-copy round)
 * starts meanwhile. Or -errno.
 */
int capture_session_epoch(struct capture_session *s, bool full, struct image **out,
			  struct epoch_report *rep);
/* Run the work after the resume for about budget_us: 1 while more is left, 0 when done. */
int capture_session_epoch_step(struct capture_session *s, uint64_t budget_us, struct image **out,
			       struct epoch_report *rep);
bool capture_session_epoch_pending(const struct capture_session *s);

/*
 * Pre-copy (precopy.h), with the service running: the next piece of work of
 * the rounds for the next epoch (full: its first round reads every page),
 * at most budget bytes read. Returns 1 when a round has just ended, 0 when
 * it has more to read, <0 on error (the rounds are dropped: the epoch then
 * copies everything in its stop, as without pre-copy). The first call on a
 * process with no write tracking yet stops it briefly to create its uffd.
 */
int capture_session_precopy_step(struct capture_session *s, bool full, uint64_t budget);
/*
 * The last round ended small enough (or more would not help), and the
 * runtime is not in a GC cycle (waited for up to 2 s): time for the stop.
 */
bool capture_session_precopy_ready(struct capture_session *s);
/* The last round ended small enough, or more would not help. */
bool capture_session_precopy_converged(const struct capture_session *s);

/* Add the cost breakdown's histograms to a status report (after status_report_service). */
struct status_report;
void capture_session_report(const struct capture_session *s, struct status_report *r);

/* Hold the process stopped (lease lost) and let it go again. */
int capture_session_freeze(struct capture_session *s);
int capture_session_thaw(struct capture_session *s);

/*
 * The daemon's one reaper (waitpid(-1) in primaryd/daemon.c) hands
 * each wait status to the session that owns the thread: owns() says
 * whether tid is one of ours. on_wait() passes a signal-delivery stop on to
 * the service (s may be NULL for a tracee no session knows) and returns 1
 * when the service itself has ended, else 0.
 */
bool capture_session_owns(const struct capture_session *s, pid_t tid);
int capture_session_on_wait(struct capture_session *s, pid_t pid, int status);
