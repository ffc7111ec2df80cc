/*
 * capture.h - taking an image of a running process (the dump side).
 *
 * One file per kind of resource, each the mirror of the file of the same
 * name in backupd/restore/: mem.c, threads.c, signals.c, fds.c, misc.c.
 * dump.c drives them in order while the process is held.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "image/image.h"
#include "proc.h"
#include "tracer.h"

struct capture {
	pid_t pid;
	struct image *img;
	struct tracee *threads;
	size_t n_threads, cap_threads;
	struct tracee *leader;
	int memfd;
	uint64_t scratch; /* a page mapped inside the target for injected calls' results */
	struct proc_vma *vmas;
	size_t n_vmas;
	uint64_t stop_us, resume_us;
};

struct dump_report {
	uint64_t pause_us, dump_us, image_bytes, pages;
	size_t threads, vmas, fds;
};

/* dump.c */
int capture_dump(pid_t pid, const char *dir, struct dump_report *rep);

/* threads.c */
int capture_seize_all(struct capture *c);
int capture_threads(struct capture *c);
void capture_release_all(struct capture *c);

/* mem.c */
int capture_find_syscall_insn(struct capture *c, uint64_t *insn);
int capture_scratch_map(struct capture *c);
void capture_scratch_unmap(struct capture *c);
int capture_vmas(struct capture *c);
int capture_pages(struct capture *c);

/* signals.c */
int capture_sigactions(struct capture *c);

/* fds.c */
int capture_fds(struct capture *c);

/* misc.c */
int capture_misc(struct capture *c);
int capture_exe(struct capture *c);
/* Hashes the executable and mapped files; done after the threads run again. */
int capture_hash_files(struct image *img);
