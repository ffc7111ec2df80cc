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

/* The time namespace the husk enters (timens.c): offsets from the host's clocks, ns. */
struct timens_plan {
	bool enter;
	int64_t off[2]; /* CLOCK_MONOTONIC, CLOCK_BOOTTIME */
};

/* Where gopatch.c looks for the executable's DWARF (goruntime.h). */
struct restore_opts {
	const char *debug_file; /* the service's debug_file, or NULL */
	const char *debug_root; /* NULL: /usr/lib/debug */
};

struct restore {
	const struct image *img;
	const struct restore_opts *opts; /* never NULL */
	pid_t pid;
	struct tracee *threads; /* one per image thread, [0] is the leader */
	size_t n_threads;
	int memfd;
	uint64_t area;
	bool same_tids;
	struct proc_vma *husk_vmas;
	size_t n_husk_vmas;
	struct timens_plan timens;
};

/* restore.c */
int restore_image(const char *dir, pid_t *pid_out);
/*
 * Restore an image already in memory (pages in img->pages, located by
 * img->runs), as the backup daemon holds its warm image. The caller must
 * have validated it (image_validate) if it came from outside.
 */
int restore_image_mem(const struct image *img, pid_t *pid_out);
/* The same two, with options (NULL: the defaults). */
int restore_image_opts(const char *dir, const struct restore_opts *opts, pid_t *pid_out);
int restore_image_mem_opts(const struct image *img, const struct restore_opts *opts,
			   pid_t *pid_out);
/* Copy len bytes to the scratch page at off; returns the tracee address, or 0 on error. */
uint64_t restore_scratch_put(struct restore *r, size_t off, const void *p, size_t len);
/* Run a syscall in the leader; returns its result (negative errno on failure). */
long restore_leader_call(struct restore *r, long nr, uint64_t a1, uint64_t a2, uint64_t a3,
			 uint64_t a4, uint64_t a5, uint64_t a6);
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

/* timens.c */
/* Before the husk is forked: the offsets that make the image's clocks carry on. */
int restore_timens_plan(const struct image *img, struct timens_plan *plan);
/* In the forked husk, before exec: unshare CLONE_NEWTIME and set the offsets. */
int restore_timens_enter(const struct timens_plan *plan);

/* creds.c */
/* Last of the injected steps: each thread's ids, groups, capabilities, securebits, no_new_privs. */
int restore_creds(struct restore *r);

/* misc.c */
int restore_check_files(const struct image *img, char *err, size_t errlen);
int restore_rlimits(struct restore *r);
int restore_misc(struct restore *r);
