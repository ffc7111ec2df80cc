/*
 * restore.h - bringing an image back as a running process (the restore side).
 *
 * The process is rebuilt inside a "husk": the same executable, started
 * stopped under ptrace, whose address space, descriptors, signals and
 * threads are replaced by injected system calls. One file per kind of
 * resource, each the mirror of primaryd/capture/ of the same name.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "image/image.h"
#include "proc.h"
#include "tracer.h"

/* Layout of the area restore maps into the husk: code page, then scratch. */
#define AREA_CODE 0
#define AREA_SCRATCH PAGE_SIZE
#define AREA_SCRATCH_LEN (16 * PAGE_SIZE)
#define AREA_STACK (AREA_SCRATCH + AREA_SCRATCH_LEN)
#define AREA_STACK_LEN (16 * PAGE_SIZE)
#define AREA_LEN (AREA_STACK + AREA_STACK_LEN)

/*
 * A fault point for tests (CHECKSYNC_FAULT=restore-STEP:N[:hang]): the Nth
 * checked operation of STEP (a scratch write, an injected call, a prlimit)
 * fails with ECANCELED, or with :hang, the injected call is replaced by
 * pause() so that the per-call deadline has to end it. As CRIU_FAULT does,
 * it lets a test reach every error path without mocking the kernel.
 */
struct restore_fault {
	char step[32];
	unsigned n;
	bool hang;
};

/* How long one injected call may take before the restore gives up on it. */
#define RESTORE_CALL_TIMEOUT_MS 5000

struct restore {
	const struct image *img;
	pid_t pid;
	struct tracee *threads; /* one per image thread, [0] is the leader */
	size_t n_threads;
	int memfd;
	uint64_t area;
	bool same_tids;
	struct proc_vma *husk_vmas;
	size_t n_husk_vmas;
	const char *step; /* the step running, named in every error */
	unsigned ops;	  /* checked operations so far in this step (fault points) */
	struct restore_fault fault;
};

/* restore.c */
int restore_image(const char *dir, pid_t *pid_out);
/*
 * Restore an image already in memory (pages in img->pages, located by
 * img->runs), as the backup daemon holds its warm image. The caller must
 * have validated it (image_validate) if it came from outside.
 */
int restore_image_mem(const struct image *img, pid_t *pid_out);
/* Copy len bytes to the scratch page at off, *addr its tracee address; 0 or -errno. */
int restore_scratch_put(struct restore *r, size_t off, const void *p, size_t len,
			uint64_t *addr);
/* Read back len bytes the husk wrote at tracee address a; 0 or -errno. */
int restore_scratch_get(struct restore *r, uint64_t a, void *p, size_t len);
/* The fault point (see struct restore_fault): 0, or -ECANCELED when this operation is to fail. */
int restore_fault(struct restore *r);
/*
 * Log once, where the resource is known: "STEP: what: strerror(-rc)".
 * Returns rc, for `return restore_fail(r, rc, "fd %d: ...", fd)`.
 */
int restore_fail(struct restore *r, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Run a syscall in the leader; returns its result (negative errno on failure, -ETIMEDOUT past its deadline). */
long restore_leader_call(struct restore *r, long nr, uint64_t a1, uint64_t a2, uint64_t a3,
			 uint64_t a4, uint64_t a5, uint64_t a6);
/* The same in another thread of the husk. */
long restore_thread_call(struct restore *r, struct tracee *t, long nr, uint64_t a1, uint64_t a2,
			 uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6);
#define restore_call(r, nr, ...) restore_call_n(r, nr, __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define restore_call_n(r, nr, a, b, c, d, e, f, ...)                                               \
	restore_leader_call(r, nr, (uint64_t)(a), (uint64_t)(b), (uint64_t)(c), (uint64_t)(d),    \
			    (uint64_t)(e), (uint64_t)(f))

/* mem.c */
uint64_t restore_find_free_area(const struct restore *r, uint64_t len);
int restore_mem(struct restore *r);

/* threads.c */
int restore_threads(struct restore *r);
int restore_threads_finish(struct restore *r);

/* signals.c */
int restore_sigactions(struct restore *r);

/* fds.c */
int restore_fds(struct restore *r);

/* gopatch.c */
int restore_patch_tids(struct restore *r);

/* misc.c */
int restore_check_files(const struct image *img, char *err, size_t errlen);
int restore_rlimits(struct restore *r);
int restore_misc(struct restore *r);
