/*
 * util.c - helpers with no better home: growable arrays, whole-file reads,
 * file hashing and a monotonic clock.
 */
#include "util.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <time.h>

void *array_push(void *arr_p, size_t *n, size_t *cap, size_t elem_size)
{
	void **arr = arr_p;

	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		void *p = realloc(*arr, ncap * elem_size);
		if (!p)
			return NULL;
		*arr = p;
		*cap = ncap;
	}
	void *slot = (char *)*arr + (*n)++ * elem_size;
	memset(slot, 0, elem_size);
	return slot;
}

ssize_t read_file(const char *path, char **out)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *buf = NULL;
	size_t len = 0, cap = 0;

	if (fd < 0)
		return -errno;
	for (;;) {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 8192;
			char *p = realloc(buf, cap);
			if (!p)
				return -ENOMEM;
			buf = p;
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		len += r;
	}
	buf[len] = 0;
	*out = TAKE_PTR(buf);
	return len;
}

static void evp_md_ctx_freep(EVP_MD_CTX **c)
{
	if (*c)
		EVP_MD_CTX_free(*c);
}

/* Regular files only: O_NONBLOCK so that a FIFO found at path is refused, never waited on. */
int file_sha256(const char *path, uint8_t out[32])
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	__attribute__((cleanup(evp_md_ctx_freep))) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char buf[65536];
	unsigned int len = 32;

	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		return -ENOMEM;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		EVP_DigestUpdate(ctx, buf, r);
	}
	EVP_DigestFinal_ex(ctx, out, &len);
	return 0;
}

void file_id_of(const struct stat *st, struct file_id *id)
{
	*id = (struct file_id){
		.dev = st->st_dev,
		.ino = st->st_ino,
		.size = st->st_size,
		.mtime_ns = st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
		.ctime_ns = st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec,
	};
}

int file_id_get(const char *path, struct file_id *id)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	file_id_of(&st, id);
	return 0;
}

bool file_id_equal(const struct file_id *a, const struct file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

int file_sha256_id(const char *path, uint8_t out[32], struct file_id *id)
{
	struct file_id after;
	int r = file_id_get(path, id);

	if (r == 0)
		r = file_sha256(path, out);
	if (r == 0)
		r = file_id_get(path, &after);
	if (r == 0 && !file_id_equal(id, &after))
		r = -EAGAIN;
	return r;
}

uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
}

uint64_t thread_cpu_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t r = write(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		c += r;
		n -= r;
	}
	return 0;
}

int read_boot_id(char *buf, size_t len)
{
	_cleanup_free_ char *text = NULL;
	ssize_t r = read_file("/proc/sys/kernel/random/boot_id", &text);

	if (r <= 0) {
		snprintf(buf, len, "unknown");
		return r < 0 ? (int)r : -ENODATA;
	}
	text[strcspn(text, "\n")] = 0;
	snprintf(buf, len, "%s", text);
	return 0;
}
