/*
 * util.h - small helpers shared by both daemons.
 *
 * Resources are released with __attribute__((cleanup)) in the manner of
 * systemd, so error paths stay one `return r;` long.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#undef PAGE_SIZE
#define PAGE_SIZE 4096UL
#define PAGE_ALIGN_DOWN(x) ((x) & ~(PAGE_SIZE - 1))
#define PAGE_ALIGN_UP(x) (((x) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))
#define _cleanup_fclose_ __attribute__((cleanup(fclosep)))

/* Take ownership out of a cleanup variable. */
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		typeof(p) _p = (p);                                                                \
		(p) = NULL;                                                                        \
		_p;                                                                                \
	})
#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int _fd = (fd);                                                                    \
		(fd) = -1;                                                                         \
		_fd;                                                                               \
	})

/* Grow *arr (of *n elements, *cap capacity) by one element; returns the new slot or NULL. */
void *array_push(void *arr_p, size_t *n, size_t *cap, size_t elem_size);

/* Read a whole file into a NUL-terminated malloc'd buffer. Returns length or -errno. */
ssize_t read_file(const char *path, char **out);

/* SHA-256 of a regular file's contents; returns 0, -EINVAL for anything else, or -errno. */
int file_sha256(const char *path, uint8_t out[32]);

/*
 * A file's identity and version as stat tells them (device, inode, size,
 * mtime, ctime): while it is unchanged, so are the bytes (the rule make and
 * rsync go by; ctime cannot be set back short of setting the clock back).
 */
struct file_id {
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
};
struct stat;
void file_id_of(const struct stat *st, struct file_id *id);
int file_id_get(const char *path, struct file_id *id);
bool file_id_equal(const struct file_id *a, const struct file_id *b);
/* file_sha256, and the identity of the version it read: -EAGAIN if the file changed meanwhile. */
int file_sha256_id(const char *path, uint8_t out[32], struct file_id *id);

uint64_t now_us(void);
/* The calling thread's CPU time: what work costs, however loaded the machine is. */
uint64_t thread_cpu_us(void);

/* Write all n bytes, retrying short writes and EINTR; 0 or -errno. */
int write_all(int fd, const void *p, size_t n);

/* This boot's /proc/sys/kernel/random/boot_id into buf; "unknown" and -errno if unreadable. */
int read_boot_id(char *buf, size_t len);
