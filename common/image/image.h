/*
 * image.h - the image of one process, as capture writes it and restore reads it.
 *
 * Every record is declared once here and shared by capture/ and
 * restore/. On disk an image is a directory with two files:
 *   core.img   header (magic, version, length) + msgpack body + SHA-256
 *   pages.img  the raw page contents that core.img's page runs point into
 * The body carries the SHA-256 of pages.img, so a truncated or altered image
 * is refused before anything is started.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/user.h>

#define IMAGE_MAGIC "CSIMG\0\0\0"
/* 2: per-thread credentials, process dumpable flag and clocks (older images are refused). */
#define IMAGE_VERSION 2
#define IMAGE_CORE_FILE "core.img"
#define IMAGE_PAGES_FILE "pages.img"

enum vma_kind {
	VMA_ANON = 0,
	VMA_FILE,
	VMA_HEAP,
	VMA_STACK,
	VMA_VDSO,
	VMA_VVAR,
	VMA_VVAR_VCLOCK,
	VMA_VSYSCALL,
};

struct image_vma {
	uint64_t start, end;
	uint32_t prot;   /* PROT_* */
	uint32_t kind;   /* enum vma_kind */
	bool shared;
	uint64_t pgoff;  /* byte offset in the backing file */
	int32_t file;    /* index into image.files, or -1 */
};

/* A file that backs a mapping; its hash is checked before restore starts. */
struct image_file {
	char *path;
	uint64_t size;
	uint8_t sha256[32];
};

/* A run of pages whose contents follow in pages.img at `offset`. */
struct image_pagerun {
	uint64_t addr;
	uint64_t npages;
	uint64_t offset;
};

#define IMAGE_XSTATE_MAX 16384
#define IMAGE_GROUPS_MAX 65536 /* NGROUPS_MAX */
#define IMAGE_SECCOMP_FILTERS_MAX 512 /* a thread's filters hold at most 32768 instructions */
#define IMAGE_SECCOMP_INSNS_MAX 4096  /* BPF_MAXINSNS */

/* One seccomp filter program, as PTRACE_SECCOMP_GET_FILTER gives it. */
struct image_seccomp_filter {
	uint32_t flags;  /* SECCOMP_FILTER_FLAG_LOG, the one flag a filter keeps */
	uint32_t len;    /* instructions (struct sock_filter, 8 bytes each) */
	uint64_t *insns;
};

/*
 * Who a thread is: Linux keeps credentials per thread (Go keeps them
 * uniform, C programs need not), so each thread record carries its own.
 * Capability sets are bit masks of CAP_* numbers.
 */
struct image_creds {
	uint32_t uid, euid, suid, fsuid;
	uint32_t gid, egid, sgid, fsgid;
	uint32_t *groups; /* supplementary groups */
	uint32_t n_groups;
	uint64_t cap_inh, cap_prm, cap_eff, cap_bnd, cap_amb;
	uint32_t securebits; /* SECBIT_* */
	bool no_new_privs;
	struct image_seccomp_filter *filters; /* seccomp filters, oldest first */
	uint32_t n_filters;
};
void image_creds_free(struct image_creds *cr);

struct image_thread {
	int32_t tid;
	struct user_regs_struct regs;
	uint32_t xstate_len;
	uint8_t *xstate; /* NT_X86_XSTATE, as PTRACE_GETREGSET gives it */
	uint64_t sigmask;
	uint64_t ss_sp, ss_size;
	int32_t ss_flags;
	uint64_t clear_tid_addr;
	uint64_t robust_head, robust_len;
	uint64_t rseq_addr;
	uint32_t rseq_len, rseq_sig;
	char comm[16];
	struct image_creds creds;
};

/* x86-64 kernel sigaction layout, as rt_sigaction takes it. */
struct image_sigaction {
	uint64_t handler, flags, restorer, mask;
};
#define IMAGE_NSIG 64

enum fd_kind {
	FD_REG = 0,  /* regular file or directory, reopened by path */
	FD_CHR,      /* character device, reopened by path */
	FD_PIPE,
	FD_EVENTFD,
	FD_EPOLL,
	FD_SOCK_LISTEN,
	FD_SOCK_DGRAM,
	FD_SOCK_DEAD, /* a connected socket: restored as closed by its peer */
};

struct image_epoll_tfd {
	int32_t fd;
	uint32_t events;
	uint64_t data;
};

struct image_fd {
	int32_t fd;
	uint32_t kind;    /* enum fd_kind */
	bool cloexec;
	uint32_t flags;   /* file status flags (O_NONBLOCK, O_APPEND, access mode) */
	char *path;
	uint64_t pos;
	uint64_t ino;     /* pipes: the pipe's inode, to pair the two ends */
	bool pipe_write;  /* pipes: this is the write end */
	uint8_t *data;    /* pipes: unread contents; sockets: sockaddr */
	uint32_t data_len;
	uint64_t count;   /* eventfd counter; listening sockets: backlog */
	int32_t sk_family, sk_type, sk_proto;
	bool sk_reuseaddr, sk_v6only;
	struct image_epoll_tfd *tfds;
	uint32_t n_tfds;
};

/*
 * The clocks as the process saw them when it was captured (inside its time
 * namespace, if it had one), so that the restored process's CLOCK_MONOTONIC
 * and CLOCK_BOOTTIME carry on from them; CLOCK_REALTIME tells how long it
 * was away. Nanoseconds.
 */
struct image_clocks {
	int64_t monotonic, boottime, realtime;
};

/* What PR_SET_MM_MAP needs, plus the rest of the process-wide state. */
struct image_mm {
	uint64_t start_code, end_code, start_data, end_data;
	uint64_t start_brk, brk, start_stack;
	uint64_t arg_start, arg_end, env_start, env_end;
	uint8_t *auxv;
	uint32_t auxv_len;
};

struct image {
	uint32_t version;
	int32_t pid;
	char *exe;          /* path of the executable, checked by hash at restore */
	int32_t exe_file;   /* index into files */
	char *cwd;
	uint32_t umask;
	uint32_t personality;
	struct rlimit rlimits[RLIM_NLIMITS];
	struct image_mm mm;
	int32_t dumpable;   /* PR_GET_DUMPABLE: 0, 1 or 2 (suid_dumpable) */
	struct image_clocks clocks;

	struct image_file *files;
	size_t n_files, cap_files;
	struct image_vma *vmas;
	size_t n_vmas, cap_vmas;
	struct image_pagerun *runs;
	size_t n_runs, cap_runs;
	struct image_thread *threads;
	size_t n_threads, cap_threads;
	struct image_fd *fds;
	size_t n_fds, cap_fds;
	struct image_sigaction sigactions[IMAGE_NSIG]; /* index sig-1 */

	/* Page contents; in memory during capture, mapped from pages.img at restore. */
	uint8_t *pages;
	uint64_t pages_len;
	bool pages_mapped;
	uint64_t pages_map_len; /* size of the mapping behind pages, when mapped */
	uint8_t pages_sha256[32];
};

struct image *image_new(void);
void image_free(struct image *img);

/*
 * Whether a mapping carries page contents in an image: private anonymous,
 * heap, stack and file mappings do (a file mapping's written pages differ
 * from its file); shared ones and the vDSO group do not. The primary's
 * dirty tracking and the backup's store both follow this one rule.
 */
bool vma_carries_contents(bool shared, uint32_t kind);
static inline void image_freep(struct image **p)
{
	if (*p)
		image_free(*p);
}
#define _cleanup_image_ __attribute__((cleanup(image_freep)))

/* Find (or add) a file by path; returns its index or -errno. */
int image_add_file(struct image *img, const char *path);

/* Write the image into dir (created if missing). Returns 0 or -errno; *what names the step. */
int image_write(const struct image *img, const char *dir, const char **what);

/*
 * Read and verify an image. On failure returns -errno and sets err to a
 * one-line description naming the file and what is wrong with it.
 */
int image_read(const char *dir, struct image **out, char *err, size_t errlen);

uint64_t image_size_on_disk(const char *dir);

/*
 * Sections of an image, for replication: an epoch carries the process
 * record, one record per thread and the fd table as separate msgpack blobs
 * (mappings and pages go as their own wire messages). Unpacking validates
 * like image_read() and reports one line in err.
 */
#include <msgpack.h>
int image_pack_process(const struct image *img, msgpack_sbuffer *sb);
int image_pack_thread(const struct image_thread *t, msgpack_sbuffer *sb);
int image_pack_fds(const struct image *img, msgpack_sbuffer *sb);
int image_unpack_process(struct image *img, const void *p, size_t n, char *err, size_t errlen);
int image_unpack_thread(struct image_thread *t, const void *p, size_t n, char *err,
			size_t errlen);
int image_unpack_fds(struct image *img, const void *p, size_t n, char *err, size_t errlen);
/* The cross-checks image_read() makes, for an image assembled in memory (runs vs pages_len too). */
int image_validate(const struct image *img, char *err, size_t errlen);
