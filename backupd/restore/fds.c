/*
 * fds.c - the file-descriptor table, at the old numbers.
 *
 * Objects are first created wherever the kernel puts them and parked above
 * every old number; then each is moved to its old number. That way a new
 * object never lands on a number another one still needs. Epoll interest
 * lists are rebuilt last, once every target descriptor is in place, with
 * the same data words (for Go, pointers to its pollDescs).
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "log.h"
#include "restore.h"
#include "util.h"

#define SETFL_MASK (O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME)

static const char *fd_kind_name(uint32_t kind)
{
	static const char *const names[] = {
		[FD_REG] = "file", [FD_CHR] = "device", [FD_PIPE] = "pipe",
		[FD_EVENTFD] = "eventfd", [FD_EPOLL] = "epoll", [FD_SOCK_LISTEN] = "listening socket",
		[FD_SOCK_DGRAM] = "datagram socket", [FD_SOCK_DEAD] = "connected socket",
	};
	return kind < ARRAY_SIZE(names) ? names[kind] : "unknown kind";
}

static long open_path(struct restore *r, const char *path, uint32_t flags)
{
	uint64_t p = restore_scratch_put(r, 0, path, strlen(path) + 1);
	return restore_call(r, SYS_openat, AT_FDCWD, p,
			    (flags & ~(O_CREAT | O_TRUNC | O_EXCL)) | O_CLOEXEC, 0);
}

static long create_reg(struct restore *r, const struct image_fd *f)
{
	long fd = open_path(r, f->path, f->flags);
	if (fd >= 0 && f->kind == FD_REG && f->pos)
		restore_call(r, SYS_lseek, fd, f->pos, SEEK_SET);
	return fd;
}

static bool has_reader(const struct image *img, uint64_t ino)
{
	for (size_t i = 0; i < img->n_fds; i++)
		if (img->fds[i].kind == FD_PIPE && img->fds[i].ino == ino &&
		    !img->fds[i].pipe_write)
			return true;
	return false;
}

/*
 * Both ends of pipe `ino` at once; *other gets the end that `f` is not.
 * Buffered bytes are written back before anyone can read.
 */
static long create_pipe(struct restore *r, const struct image_fd *f, long *other)
{
	int p[2];
	uint64_t a = restore_scratch_put(r, 0, (int[2]){-1, -1}, sizeof(p));
	long ret = restore_call(r, SYS_pipe2, a, O_CLOEXEC);
	if (ret < 0)
		return ret;
	if (tracer_peek(r->memfd, a, p, sizeof(p)) < 0)
		return -EIO;
	for (size_t i = 0; i < r->img->n_fds; i++) {
		const struct image_fd *g = &r->img->fds[i];
		if (g->kind == FD_PIPE && g->ino == f->ino && !g->pipe_write && g->data_len) {
			const size_t chunk = AREA_SCRATCH_LEN - PAGE_SIZE;
			for (uint32_t off = 0; off < g->data_len; off += chunk) {
				size_t n = g->data_len - off < chunk ? g->data_len - off : chunk;
				uint64_t d = restore_scratch_put(r, PAGE_SIZE, g->data + off, n);
				restore_call(r, SYS_write, p[1], d, n);
			}
			break;
		}
	}
	*other = f->pipe_write ? p[0] : p[1];
	return f->pipe_write ? p[1] : p[0];
}

static long setsockopt_int(struct restore *r, long fd, int level, int opt, int val)
{
	uint64_t p = restore_scratch_put(r, 1024, &val, sizeof(val));
	return restore_call(r, SYS_setsockopt, fd, level, opt, p, sizeof(val));
}

static long bind_socket(struct restore *r, long fd, const struct image_fd *f)
{
	uint64_t a = restore_scratch_put(r, 0, f->data, f->data_len);
	long ret = restore_call(r, SYS_bind, fd, a, f->data_len);
	if (ret == -EADDRNOTAVAIL && (f->sk_family == AF_INET || f->sk_family == AF_INET6)) {
		/* The service address may arrive later (a takeover hook moves it). */
		if (f->sk_family == AF_INET)
			setsockopt_int(r, fd, IPPROTO_IP, IP_FREEBIND, 1);
		else
			setsockopt_int(r, fd, IPPROTO_IPV6, IPV6_FREEBIND, 1);
		ret = restore_call(r, SYS_bind, fd, a, f->data_len);
	}
	return ret;
}

static long create_socket(struct restore *r, const struct image_fd *f)
{
	long fd = restore_call(r, SYS_socket, f->sk_family, f->sk_type | SOCK_CLOEXEC, f->sk_proto);
	long ret;

	if (fd < 0)
		return fd;
	if (f->sk_reuseaddr)
		setsockopt_int(r, fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (f->sk_family == AF_INET6)
		setsockopt_int(r, fd, IPPROTO_IPV6, IPV6_V6ONLY, f->sk_v6only);
	if (f->sk_family == AF_UNIX && f->data_len > offsetof(struct sockaddr_un, sun_path) + 1 &&
	    f->data[offsetof(struct sockaddr_un, sun_path)] != 0) {
		/* A path socket leaves its file behind; the old process will not use it again. */
		const char *path = (const char *)f->data + offsetof(struct sockaddr_un, sun_path);
		uint64_t p = restore_scratch_put(r, 2048, path, strnlen(path, 108));
		restore_call(r, SYS_unlinkat, AT_FDCWD, p, 0);
	}
	bool bound = f->data_len > sizeof(sa_family_t);
	if (f->kind == FD_SOCK_DGRAM && f->data_len >= 4)
		bound = ((const struct sockaddr_in *)f->data)->sin_port != 0;
	if (bound) {
		ret = bind_socket(r, fd, f);
		if (ret < 0) {
			restore_call(r, SYS_close, fd);
			return ret;
		}
	}
	if (f->kind == FD_SOCK_LISTEN) {
		ret = restore_call(r, SYS_listen, fd, f->count ? f->count : SOMAXCONN);
		if (ret < 0) {
			restore_call(r, SYS_close, fd);
			return ret;
		}
	}
	return fd;
}

/* A connected socket whose peer is gone: one end of a pair whose other end we close. */
static long create_dead_socket(struct restore *r, const struct image_fd *f)
{
	int sv[2];
	uint64_t a = restore_scratch_put(r, 0, (int[2]){-1, -1}, sizeof(sv));
	int type = f->sk_type == SOCK_DGRAM ? SOCK_DGRAM : SOCK_STREAM;
	long ret = restore_call(r, SYS_socketpair, AF_UNIX, type | SOCK_CLOEXEC, 0, a);
	if (ret < 0)
		return ret;
	if (tracer_peek(r->memfd, a, sv, sizeof(sv)) < 0)
		return -EIO;
	restore_call(r, SYS_close, sv[1]);
	return sv[0];
}

/*
 * Standard output or error whose reader lived outside the process is gone
 * with the old host; a write to it would raise SIGPIPE and kill the
 * service, so it goes to /dev/null instead.
 */
static bool output_lost(const struct image *img, const struct image_fd *f)
{
	if (f->fd > 2)
		return false;
	if (f->kind == FD_SOCK_DEAD)
		return true;
	return f->kind == FD_PIPE && f->pipe_write && !has_reader(img, f->ino);
}

static long create_fd(struct restore *r, const struct image_fd *f, long *other)
{
	*other = -1;
	if (output_lost(r->img, f)) {
		log_warn("fd %d: its reader is gone, redirecting it to /dev/null", f->fd);
		return open_path(r, "/dev/null", O_RDWR);
	}
	switch (f->kind) {
	case FD_REG:
	case FD_CHR:
		return create_reg(r, f);
	case FD_PIPE:
		return create_pipe(r, f, other);
	case FD_EVENTFD:
		return restore_call(r, SYS_eventfd2, f->count, O_CLOEXEC);
	case FD_EPOLL:
		return restore_call(r, SYS_epoll_create1, EPOLL_CLOEXEC);
	case FD_SOCK_LISTEN:
	case FD_SOCK_DGRAM:
		return create_socket(r, f);
	case FD_SOCK_DEAD:
		return create_dead_socket(r, f);
	}
	return -EINVAL;
}

static int park(struct restore *r, long fd, long parked)
{
	long ret = restore_call(r, SYS_dup3, fd, parked, O_CLOEXEC);
	restore_call(r, SYS_close, fd);
	return ret < 0 ? ret : 0;
}

static int create_all(struct restore *r, long *parked, long park_base)
{
	const struct image *img = r->img;

	for (size_t i = 0; i < img->n_fds; i++) {
		const struct image_fd *f = &img->fds[i];
		long other, fd, ret;

		if (parked[i] >= 0)
			continue;
		fd = create_fd(r, f, &other);
		if (fd < 0)
			return log_error_errno(fd, "cannot recreate fd %d (%s)", f->fd,
					       f->path ? f->path : fd_kind_name(f->kind));
		restore_call(r, SYS_fcntl, fd, F_SETFL, f->flags & SETFL_MASK);
		parked[i] = park_base + i;
		ret = park(r, fd, parked[i]);
		if (ret < 0)
			return log_error_errno(ret, "cannot move fd %d", f->fd);
		if (other < 0)
			continue;
		/* The other end of a pipe goes to whichever old fd held it, if any. */
		for (size_t j = i + 1; j < img->n_fds; j++) {
			const struct image_fd *g = &img->fds[j];
			if (g->kind == FD_PIPE && g->ino == f->ino && g->pipe_write != f->pipe_write &&
			    !output_lost(img, g) && parked[j] < 0) {
				restore_call(r, SYS_fcntl, other, F_SETFL, g->flags & SETFL_MASK);
				parked[j] = park_base + j;
				ret = restore_call(r, SYS_dup3, other, parked[j], O_CLOEXEC);
				if (ret < 0)
					return log_error_errno(ret, "cannot move fd %d", g->fd);
				break;
			}
		}
		restore_call(r, SYS_close, other);
	}
	return 0;
}

static int add_epoll_targets(struct restore *r, const struct image_fd *ep)
{
	for (uint32_t k = 0; k < ep->n_tfds; k++) {
		const struct image_epoll_tfd *t = &ep->tfds[k];
		struct epoll_event ev = {.events = t->events, .data.u64 = t->data};
		uint64_t a = restore_scratch_put(r, 0, &ev, sizeof(ev));
		long ret = restore_call(r, SYS_epoll_ctl, ep->fd, EPOLL_CTL_ADD, t->fd, a);
		if (ret < 0)
			return log_error_errno(ret, "cannot add fd %d to epoll fd %d", t->fd,
					       ep->fd);
	}
	return 0;
}

int restore_fds(struct restore *r)
{
	const struct image *img = r->img;
	long max_fd = 2;
	int rc;

	for (size_t i = 0; i < img->n_fds; i++)
		max_fd = img->fds[i].fd > max_fd ? img->fds[i].fd : max_fd;
	long park_base = max_fd + 1 + 16;
	_cleanup_free_ long *parked = malloc(sizeof(long) * (img->n_fds + 1));
	if (!parked)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_fds; i++)
		parked[i] = -1;

	/* Whatever the husk inherited from us must not leak into the service. */
	restore_call(r, SYS_close_range, 0, ~0U, 0);
	rc = create_all(r, parked, park_base);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < img->n_fds; i++) {
		const struct image_fd *f = &img->fds[i];
		if (parked[i] < 0)
			continue;
		long ret = restore_call(r, SYS_dup3, parked[i], f->fd, f->cloexec ? O_CLOEXEC : 0);
		restore_call(r, SYS_close, parked[i]);
		if (ret < 0)
			return log_error_errno(ret, "cannot place fd %d", f->fd);
	}
	for (size_t i = 0; i < img->n_fds; i++)
		if (img->fds[i].kind == FD_EPOLL) {
			rc = add_epoll_targets(r, &img->fds[i]);
			if (rc < 0)
				return rc;
		}
	return 0;
}
