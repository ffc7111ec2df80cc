/*
 * proc.h - what /proc says about a process, parsed once.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct proc_vma {
	uint64_t start, end;
	uint32_t prot;
	bool shared;
	uint64_t pgoff;
	uint32_t kind; /* enum vma_kind */
	char path[4096];
	bool deleted;
};

/* All mappings of pid, in address order. Returns count or -errno. */
ssize_t proc_read_maps(pid_t pid, struct proc_vma **out);

/* Thread ids of pid. Returns count or -errno. */
ssize_t proc_list_tasks(pid_t pid, pid_t **out);

/* Fields of /proc/PID/stat, numbered as in proc(5) (1-based). */
int proc_stat_fields(pid_t pid, uint64_t *fields, int nfields);

/* The value of "Key:" in /proc/PID/status, parsed with base. */
int proc_status_field(pid_t pid, const char *key, int base, uint64_t *out);
/* Several at once, from one read of the file; -ENOENT unless all are there. */
int proc_status_fields(pid_t pid, const char *const *keys, size_t n, int base, uint64_t *out);

/* readlink of /proc/PID/<what>. */
int proc_readlink(pid_t pid, const char *what, char *buf, size_t len);

/*
 * The credentials of one thread, from /proc/PID/task/TID/status: ids,
 * groups, capability sets, NoNewPrivs (securebits are in no /proc file and
 * are left alone). seccomp[0] is the thread's seccomp mode (0 none, 1
 * strict, 2 filter), seccomp[1] its number of filters. groups is malloc'd
 * into cr->groups.
 */
struct image_creds;
int proc_task_creds(pid_t pid, pid_t tid, struct image_creds *cr, int seccomp[2]);

/*
 * The n seccomp filters of a ptrace-stopped thread we trace, oldest first,
 * into cr->filters (PTRACE_SECCOMP_GET_FILTER: needs CAP_SYS_ADMIN).
 */
int task_seccomp_filters(pid_t tid, int n, struct image_creds *cr);

/* The inode of /proc/PID/ns/<which> (pid 0: ourselves), which names the namespace. */
int proc_ns_inode(pid_t pid, const char *which, uint64_t *ino);

/*
 * Offsets (ns) of the time namespace pid (0: ourselves) is in, from
 * /proc/PID/timens_offsets: off[0] CLOCK_MONOTONIC, off[1] CLOCK_BOOTTIME.
 * That file shows the namespace the process's children get; -ENOTUNIQ when
 * that is not its own (it unshared CLONE_NEWTIME and has not entered it).
 */
int proc_timens_offsets(pid_t pid, int64_t off[2]);
