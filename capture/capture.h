/*
 * capture.h - taking an image of a running process (the dump side).
 *
 * One file per kind of resource, each the mirror of the file of the same
 * name in restore/: mem.c, threads.c, signals.c, fds.c, misc.c,
 * creds.c, timens.c.
 * dump.c drives them in order while the process is held.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sched.h>
#include <sys/types.h>

#include "goruntime.h"
#include "image/image.h"
#include "inject.h"
#include "proc.h"
#include "tracer.h"

struct go_layout;
struct live_set;
struct memcache;
struct wp_tracker;
struct precopy;
struct reach;

/* Bytes mapped and written per class of memory, for the dump's report. */
enum mem_class { MC_HEAP, MC_STACKS, MC_GLOBALS, MC_OFFHEAP, MC_FREE, MC_ZERO, MC_COUNT };

/* The parts of capture_held(), timed for the epoch cost breakdown (incremental.h). */
enum capture_phase {
	CPH_SAFEPOINT,	/* reaching a safepoint, retries included */
	CPH_LIVE_SET,	/* mappings and the Go heap's live spans */
	CPH_DIRTY_SCAN, /* write tracking: PAGEMAP_SCAN and re-arming */
	CPH_THREADS,	/* registers, signal state, injected reads */
	CPH_COPY,	/* present-page scan and the copy into staging */
	CPH_FDS,	/* the descriptor table */
	CPH_COUNT
};

/* What the reachability scan of new objects found (reach.c), after the threads ran again. */
struct reach_stats {
	const char *state; /* "done", or why not ("off", "no previous epoch", ...) */
	uint64_t scan_us;
	uint64_t new_objects, new_bytes;	   /* allocated since the previous epoch */
	uint64_t reached_objects, reached_bytes;   /* of those, reachable: shipped */
	uint64_t zeroed_bytes;			   /* staged bytes of the others, zeroed */
	uint64_t pages_dropped;			   /* pages left all zero (a dump leaves them out) */
	uint64_t root_bytes;			   /* bytes scanned as roots */
};

struct capture_stats {
	uint64_t phase_us[CPH_COUNT];
	uint64_t phase_cpu_us[CPH_COUNT]; /* our thread's CPU time in each */
	uint64_t cpu_mark;
	uint64_t spans_read, spans_kept; /* mspans read from the process, taken from the span cache */
	uint64_t fds_read, fds_kept; /* descriptors read from /proc, taken from the cache */
	uint64_t threads_read, threads_kept; /* threads' creds and names read, taken from the cache */
	struct reach_stats reach;
	uint64_t mapped[MC_COUNT], written[MC_COUNT];
	unsigned safepoint_tries, fallback;
	const char *mode; /* "live", "whole", "whole (no DWARF)", "whole (no safepoint)" */
};

/*
 * What only injected syscalls can read, kept between epochs: each injection
 * is a round trip through the scheduler (~100 us under load), and these
 * rarely change. Refreshed in full epochs, every CACHE_REFRESH_EPOCHS, and
 * when a cheap outside sign changes (the signal masks in /proc, the [heap]
 * end, a new thread id).
 */
#define CACHE_REFRESH_EPOCHS 50

#define CACHE_GROUPS 16

struct thread_cache {
	pid_t tid;
	uint64_t ss_sp, ss_size, tid_addr;
	int32_t ss_flags;
	uint32_t securebits;
	/*
	 * What /proc and ptrace say of the thread that it alone changes
	 * (credentials, name, robust list, rseq), valid while creds_kept: read
	 * when the thread is new or the cache is refreshed, and again for
	 * every thread when the main thread's credentials changed (threads.c).
	 */
	bool creds_kept;
	struct image_creds creds; /* groups in groups[], no seccomp filters of its own */
	uint32_t groups[CACHE_GROUPS];
	char comm[16];
	uint64_t robust_head, robust_len, rseq_addr;
	uint32_t rseq_len, rseq_sig;
};

/* The main thread's credentials as the last stop read them (threads.c). */
struct creds_sign {
	bool known;
	struct image_creds creds;
	uint32_t groups[CACHE_GROUPS];
	int seccomp[2];
};

/*
 * A socket of the descriptor table as the last stop read it (fds.c). Kept
 * only for sockets whose kind cannot change any more (listening, or
 * connected), and taken again only while the same socket (its inode, from
 * the /proc link) sits at the same descriptor.
 */
struct fd_cache {
	int32_t fd;
	uint64_t ino;
	struct image_fd f; /* data points into addr */
	uint8_t addr[128];
};

struct inject_cache {
	bool valid;
	unsigned epochs;
	struct fd_cache *fds;
	size_t n_fds, cap_fds;
	struct image_sigaction sigactions[IMAGE_NSIG];
	uint64_t sig_caught, sig_ignored;
	uint64_t brk, heap_end;
	int32_t dumpable;
	uint64_t timens_ino;     /* the time namespace timens_delta was found for */
	int64_t timens_delta[2]; /* its monotonic and boottime minus ours, ns */
	struct thread_cache *threads;
	size_t n_threads, cap_threads;
	struct creds_sign leader;
};

struct capture {
	pid_t pid;
	/* How many seccomp filters primaryd itself runs under (creds.c), read once: it never changes. */
	bool env_filters_known;
	int env_filters;
	struct image *img;
	struct tracee *threads;
	size_t n_threads, cap_threads;
	struct tracee *leader;
	int memfd;
	uint64_t scratch; /* a page mapped inside the target for injected calls' results */
	struct proc_vma *vmas;
	size_t n_vmas;
	uint64_t stop_us, resume_us, stopped_us;
	/* Our scheduling before capture_cpu_hold(), restored by capture_cpu_release(). */
	bool cpu_held, cpu_hold_failed;
	int sched_policy;
	struct sched_param sched_param;
	bool whole;            /* copy whole mappings, not only live pages */
	unsigned long seize_options; /* PTRACE_O_EXITKILL when we guard the process */
	bool detach_between;   /* let go between stops (the process dies with us by PDEATHSIG) */
	struct wp_tracker *wp; /* write tracking to re-arm this epoch, or NULL */
	bool wp_filter;        /* copy only pages the tracker saw written */
	struct precopy *precopy; /* pages read by pre-copy rounds (precopy.h), or NULL */
	/*
	 * Run while the service runs between two tries for a safepoint (dump.c),
	 * or NULL: a pre-copy round, so the stop that follows re-reads only what
	 * was written since it, not all the service wrote while it was let run.
	 */
	void (*between_tries)(struct capture *c, void *ctx);
	void *between_ctx;
	bool swap;             /* the system has swap: swapped-out pages exist */
	struct inject_cache *cache; /* NULL: inject every time (one-shot dump) */
	bool cache_ok;              /* this epoch may use it */
	const char *debug_file;	      /* the service's debug_file, or NULL */
	const char *debug_root;	      /* NULL: /usr/lib/debug */
	struct go_debuginfo debuginfo; /* where the layout came from (capture_load_layout) */
	struct go_layout *go;  /* NULL: no runtime metadata, whole capture */
	struct live_set *live; /* pages of the heap arenas worth keeping */
	struct memcache *mc;   /* reads of the runtime's metadata, by 16 KiB block */
	struct reach *reach;   /* span states kept between stops, for the scan of new objects */
	bool reach_off;        /* config reach = off: ship every new object */
	unsigned live_check_every; /* CHECKSYNC_CHECK_LIVE_SET: check the span cache every N stops */
	struct capture_stats stats;
};

struct dump_report {
	uint64_t pause_us, dump_us, image_bytes, pages;
	size_t threads, vmas, fds;
	struct capture_stats stats;
	struct go_debuginfo debuginfo;
};

struct dump_options {
	bool whole; /* whole-mapping capture even when live capture is possible */
	const char *debug_file; /* --debug-file: tried when the standard lookup finds none */
	const char *debug_root; /* --debug-root: instead of /usr/lib/debug */
};

/* dump.c */
int capture_dump(pid_t pid, const char *dir, const struct dump_options *opt,
		 struct dump_report *rep);
/* With every thread stopped: reach a safepoint and capture everything into c->img. */
int capture_held(struct capture *c);
void capture_cleanup(struct capture *c);

/* threads.c */
/* Seize (first call) or re-stop (after capture_resume_all) every thread. */
int capture_stop_all(struct capture *c);
int capture_resume_all(struct capture *c);
/* Run at real-time priority from before a stop until after its resume (see threads.c). */
void capture_cpu_hold(struct capture *c);
void capture_cpu_release(struct capture *c);
int capture_threads(struct capture *c);
void capture_release_all(struct capture *c);

/* mem.c */
int capture_find_syscall_insn(struct capture *c, uint64_t *insn);
/* Injected calls in the leader, with the scratch page if mapped (common/inject.h). */
struct injector capture_injector(struct capture *c);
/* The scratch page, mapped on first use in this stop. */
int capture_scratch_get(struct capture *c, uint64_t *addr);
void capture_scratch_unmap(struct capture *c);
int capture_vmas(struct capture *c);
int capture_pages(struct capture *c);
uint64_t capture_staging_estimate(pid_t pid);
int capture_staging_prepare(struct capture *c, uint64_t bytes);
void capture_staging_free(struct capture *c);

/* live.c */
/* Find the DWARF (c->debug_file, c->debug_root), say once which, and read the layout from it. */
int capture_load_layout(struct capture *c);
/* 1 if the runtime is at a safepoint, 0 if not (why says what is busy), <0 on error. */
int capture_at_safepoint(struct capture *c, char *why, size_t whylen);
int capture_live_set(struct capture *c);
/*
 * After the threads run again: what of the live set can wait (reach.c's
 * sorting of the spans noted). Before capture_reach(), after every stop.
 */
void capture_live_set_end(struct capture *c);
/*
 * With the service running, right after a scan of write tracking (w): bring
 * the live set's span cache forward to that scan, re-reading the mspans it
 * found written (pre-copy rounds). *read counts the mspans read.
 */
struct wp_tracker;
int capture_live_refresh(struct capture *c, const struct wp_tracker *w, const struct proc_vma *vmas,
			 size_t n_vmas, uint64_t *read);
void capture_live_free(struct capture *c);
void capture_memcache_free(struct capture *c);
/* Which pages of [start, end) to copy; calls emit for each kept sub-range. */
int capture_live_filter(struct capture *c, uint64_t start, uint64_t end,
			int (*emit)(void *ctx, uint64_t s, uint64_t e), void *ctx);
enum mem_class capture_classify(const struct capture *c, uint64_t addr);
/* Whether addr is in a stack below its stack pointer (less a slack): dead frames. */
bool capture_live_dead_stack(const struct capture *c, uint64_t addr);

/* reach.c (see reach.h) */
void capture_reach_free(struct capture *c);

/* True when cached injected reads may be used in this epoch. */
bool capture_cache_usable(struct capture *c);

/* signals.c */
int capture_sigactions(struct capture *c);
int capture_signal_masks(struct capture *c, uint64_t masks[2]);

/* fds.c */
int capture_fds(struct capture *c);

/* creds.c */
/* A thread's ids, groups, capabilities, no_new_privs, seccomp filters; refuses strict mode. */
int capture_creds(struct capture *c, struct tracee *t, struct image_thread *it);
/* Securebits, read from inside the thread (injected prctl). */
int capture_securebits_inside(struct capture *c, struct tracee *t, uint32_t *bits);
/* The process's dumpable flag into c->img (injected in the leader, cached). */
int capture_dumpable(struct capture *c);

/* timens.c */
/* The process's CLOCK_MONOTONIC and CLOCK_BOOTTIME (in its time namespace) and CLOCK_REALTIME. */
int capture_clocks(struct capture *c);

/* misc.c */
int capture_misc(struct capture *c);
int capture_exe(struct capture *c);
/* Hashes already computed, by path and size: mapped files rarely change between epochs. */
struct file_cache {
	struct image_file *v;
	size_t n, cap;
};
void capture_file_cache_free(struct file_cache *fc);
/* Hashes the executable and mapped files (after the threads run again); cache may be NULL. */
int capture_hash_files(struct image *img, struct file_cache *cache);
