/*
 * restore.h - bringing an image back as a running process (the restore side).
 *
 * The process is rebuilt inside a "husk": the same executable, started
 * stopped under ptrace, whose address space, descriptors, signals and
 * threads are replaced by injected system calls. One file per kind of
 * resource, each the mirror of capture/ of the same name.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "image/image.h"
#include "inject.h"
#include "proc.h"
#include "tracer.h"

/* Layout of the area restore maps into the husk: code page, then scratch. */
#define AREA_CODE 0
#define AREA_SCRATCH PAGE_SIZE
#define AREA_SCRATCH_LEN (16 * PAGE_SIZE)
#define AREA_STACK (AREA_SCRATCH + AREA_SCRATCH_LEN)
#define AREA_STACK_LEN (16 * PAGE_SIZE)
#define AREA_LEN (AREA_STACK + AREA_STACK_LEN)

/* How long one injected call may take before the restore gives up on it. */
#define RESTORE_CALL_TIMEOUT_MS 5000

/* The time namespace the husk enters (timens.c): offsets from the host's clocks, ns. */
struct timens_plan {
	bool enter;
	int64_t off[2]; /* CLOCK_MONOTONIC, CLOCK_BOOTTIME */
};

/*
 * What the caller does around the husk (backupd: its scope and journal,
 * restorer.c). Standard output and error whose reader was on the old host
 * are lost; without open_output they go to /dev/null. open_output runs in
 * the husk itself, whose pid the service keeps, after husk_forked has put
 * that pid where it belongs: the descriptor is the service's own from the
 * start, as systemd connects a unit's output from the unit's own process.
 */
struct restore_hooks {
	/* In the restorer, right after the fork; the husk waits until it returns. */
	void (*husk_forked)(pid_t husk, void *arg);
	/*
	 * In the husk before exec, only when fd 1 or 2 lost its reader: a
	 * descriptor for them, or a negative errno (then /dev/null; the
	 * restorer says so, once).
	 */
	int (*open_output)(void *arg);
	const char *output_name; /* what open_output gives, for the log: "the journal" */
	void *arg;
};

/* Where gopatch.c looks for the executable's DWARF (goruntime.h), and the hooks. */
struct restore_opts {
	const char *debug_file; /* the service's debug_file, or NULL */
	const char *debug_root; /* NULL: /usr/lib/debug */
	const char *service;	/* the service's name, for the caller's hooks; or NULL */
	const struct restore_hooks *hooks; /* or NULL */
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
	long output_fd;	     /* the husk's fd from hooks->open_output until fds.c places it; -1 */
	int report_fd;	     /* where to say the husk's pid; -1: nowhere */
	int go_fd;	     /* where the go-ahead to release comes from; -1: none needed */
	struct injector inj; /* in the leader; inj.step is the step running, named in errors */
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
/*
 * The same for restorer.c: "husk PID\n" goes to report_fd as soon as the husk
 * exists, and "ready PID\n" just before its threads are let go; then one byte
 * must come on go_fd (the daemon has recorded PID as serving), or the restore
 * fails. Nothing of the image runs on its own before that byte.
 */
int restore_image_mem_report(const struct image *img, const struct restore_opts *opts,
			     int report_fd, int go_fd, pid_t *pid_out);
/*
 * Log once, where the resource is known: "STEP: what: strerror(-rc)".
 * Returns rc, for `return restore_fail(r, rc, "fd %d: ...", fd)`.
 */
int restore_fail(struct restore *r, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A syscall in the leader: its result or a negative errno (inject.h). */
#define restore_call(r, nr, ...) inject_call(&(r)->inj, nr, __VA_ARGS__)

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
/* Before the husk is forked: the fd number open_output's descriptor will have in it, or -1. */
long restore_output_fd_plan(const struct restore *r);
/* In the forked husk, before exec: open_output's descriptor at r->output_fd (kept across exec). */
int restore_output_open(const struct restore *r);

/* gopatch.c */
int restore_patch_tids(struct restore *r);

/* timens.c */
/* Before the husk is forked: the offsets that make the image's clocks carry on. */
int restore_timens_plan(const struct image *img, struct timens_plan *plan);
/* Whether we hold what a time namespace takes (CAP_SYS_ADMIN, CAP_SYS_TIME). */
bool restore_can_make_timens(void);
/* In the forked husk, before exec: unshare CLONE_NEWTIME and set the offsets. */
int restore_timens_enter(const struct timens_plan *plan);

/* creds.c */
/* Last of the injected steps: each thread's ids, groups, capabilities, securebits, no_new_privs. */
int restore_creds(struct restore *r);

/* misc.c */
int restore_check_files(const struct image *img, char *err, size_t errlen);
int restore_rlimits(struct restore *r);
int restore_misc(struct restore *r);
