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
#include <unistd.h>

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

/*
 * Every descriptor is opened non-blocking and gets its own flags back
 * afterwards (F_SETFL): a path that became a FIFO since the dump must not
 * hold the restore until someone opens its other end.
 */
static long open_path(struct restore *r, const char *path, uint32_t flags)
{
	uint64_t p;
	int rc = inject_put(&r->inj, 0, path, strlen(path) + 1, &p);
	if (rc < 0)
		return rc;
	return restore_call(r, SYS_openat, AT_FDCWD, p,
			    (flags & ~(O_CREAT | O_TRUNC | O_EXCL)) | O_CLOEXEC | O_NONBLOCK, 0);
}

static long create_reg(struct restore *r, const struct image_fd *f)
{
	long fd = open_path(r, f->path, f->flags);
	if (fd < 0)
		return restore_fail(r, fd, "fd %d: cannot open %s (openat)", f->fd, f->path);
	if (f->kind == FD_REG && f->pos) {
		long ret = restore_call(r, SYS_lseek, fd, f->pos, SEEK_SET);
		if (ret < 0)
			return restore_fail(r, ret, "fd %d: cannot seek %s to %lu (lseek)", f->fd,
					    f->path, (unsigned long)f->pos);
	}
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

/* The read end's record holds what was buffered in pipe ino. */
static const struct image_fd *pipe_contents(const struct image *img, uint64_t ino)
{
	for (size_t i = 0; i < img->n_fds; i++) {
		const struct image_fd *g = &img->fds[i];
		if (g->kind == FD_PIPE && g->ino == ino && !g->pipe_write && g->data_len)
			return g;
	}
	return NULL;
}

/*
 * Buffered bytes go back before anyone can read, into a pipe first sized
 * to hold them all (F_SETPIPE_SZ), written non-blocking: a pipe that cannot
 * hold them fails the restore instead of hanging it.
 */
static int fill_pipe(struct restore *r, const struct image_fd *f, long wfd)
{
	const struct image_fd *g = pipe_contents(r->img, f->ino);
	const size_t chunk = AREA_SCRATCH_LEN - PAGE_SIZE;
	long ret;

	if (!g)
		return 0;
	if (g->data_len > 16 * PAGE_SIZE) {
		ret = restore_call(r, SYS_fcntl, wfd, F_SETPIPE_SZ, g->data_len);
		if (ret < 0)
			return restore_fail(r, ret, "fd %d: cannot size pipe %lu for its %u bytes "
					    "(F_SETPIPE_SZ)", f->fd, (unsigned long)f->ino,
					    g->data_len);
	}
	for (uint32_t off = 0; off < g->data_len;) {
		size_t n = g->data_len - off < chunk ? g->data_len - off : chunk;
		uint64_t d;
		int rc = inject_put(&r->inj, PAGE_SIZE, g->data + off, n, &d);
		if (rc < 0)
			return restore_fail(r, rc, "fd %d: cannot stage the contents of pipe %lu",
					    f->fd, (unsigned long)f->ino);
		ret = restore_call(r, SYS_write, wfd, d, n);
		if (ret <= 0)
			return restore_fail(r, ret < 0 ? ret : -EIO,
					    "fd %d: cannot write byte %u of %u back into pipe %lu "
					    "(write)", f->fd, off, g->data_len, (unsigned long)f->ino);
		off += ret;
	}
	return 0;
}

/* Both ends of pipe `ino` at once; *other gets the end that `f` is not. */
static long create_pipe(struct restore *r, const struct image_fd *f, long *other)
{
	int p[2] = {-1, -1};
	uint64_t a;
	int rc = inject_put(&r->inj, 0, p, sizeof(p), &a);
	if (rc < 0)
		return restore_fail(r, rc, "fd %d: cannot stage pipe2", f->fd);
	long ret = restore_call(r, SYS_pipe2, a, O_CLOEXEC | O_NONBLOCK);
	if (ret < 0)
		return restore_fail(r, ret, "fd %d: cannot create pipe %lu (pipe2)", f->fd,
				    (unsigned long)f->ino);
	rc = inject_get(&r->inj, a, p, sizeof(p));
	if (rc < 0)
		return restore_fail(r, rc, "fd %d: cannot read the result of pipe2", f->fd);
	rc = fill_pipe(r, f, p[1]);
	if (rc < 0)
		return rc;
	*other = f->pipe_write ? p[0] : p[1];
	return f->pipe_write ? p[1] : p[0];
}

static long setsockopt_int(struct restore *r, long fd, int level, int opt, int val)
{
	uint64_t p;
	int rc = inject_put(&r->inj, 1024, &val, sizeof(val), &p);
	return rc < 0 ? rc : restore_call(r, SYS_setsockopt, fd, level, opt, p, sizeof(val));
}

static long bind_socket(struct restore *r, long fd, const struct image_fd *f)
{
	uint64_t a;
	long ret = inject_put(&r->inj, 0, f->data, f->data_len, &a);
	if (ret < 0)
		return ret;
	ret = restore_call(r, SYS_bind, fd, a, f->data_len);
	if (ret == -EADDRNOTAVAIL && (f->sk_family == AF_INET || f->sk_family == AF_INET6)) {
		/* The service address may arrive later (a takeover hook moves it). */
		if (f->sk_family == AF_INET)
			ret = setsockopt_int(r, fd, IPPROTO_IP, IP_FREEBIND, 1);
		else
			ret = setsockopt_int(r, fd, IPPROTO_IPV6, IPV6_FREEBIND, 1);
		if (ret >= 0)
			ret = restore_call(r, SYS_bind, fd, a, f->data_len);
	}
	return ret;
}

/* A path socket leaves its file behind; the old process will not use it again. */
static long unlink_socket_path(struct restore *r, const struct image_fd *f)
{
	const char *path = (const char *)f->data + offsetof(struct sockaddr_un, sun_path);
	char buf[109];
	uint64_t p;

	snprintf(buf, sizeof(buf), "%.*s", (int)strnlen(path, 108), path);
	long ret = inject_put(&r->inj, 2048, buf, strlen(buf) + 1, &p);
	if (ret >= 0)
		ret = restore_call(r, SYS_unlinkat, AT_FDCWD, p, 0);
	return ret == -ENOENT ? 0 : ret;
}

static long socket_setup(struct restore *r, long fd, const struct image_fd *f)
{
	long ret = 0;

	if (f->sk_reuseaddr && (ret = setsockopt_int(r, fd, SOL_SOCKET, SO_REUSEADDR, 1)) < 0)
		return restore_fail(r, ret, "fd %d: cannot set SO_REUSEADDR", f->fd);
	if (f->sk_family == AF_INET6 &&
	    (ret = setsockopt_int(r, fd, IPPROTO_IPV6, IPV6_V6ONLY, f->sk_v6only)) < 0)
		return restore_fail(r, ret, "fd %d: cannot set IPV6_V6ONLY", f->fd);
	if (f->sk_family == AF_UNIX && f->data_len > offsetof(struct sockaddr_un, sun_path) + 1 &&
	    f->data[offsetof(struct sockaddr_un, sun_path)] != 0 &&
	    (ret = unlink_socket_path(r, f)) < 0)
		return restore_fail(r, ret, "fd %d: cannot remove the old socket file (unlinkat)",
				    f->fd);
	bool bound = f->data_len > sizeof(sa_family_t);
	if (f->kind == FD_SOCK_DGRAM && f->data_len >= 4)
		bound = ((const struct sockaddr_in *)f->data)->sin_port != 0;
	if (bound && (ret = bind_socket(r, fd, f)) < 0)
		return restore_fail(r, ret, "fd %d: cannot bind the socket to its old address",
				    f->fd);
	if (f->kind == FD_SOCK_LISTEN &&
	    (ret = restore_call(r, SYS_listen, fd, f->count ? f->count : SOMAXCONN)) < 0)
		return restore_fail(r, ret, "fd %d: cannot listen", f->fd);
	return 0;
}

static long create_socket(struct restore *r, const struct image_fd *f)
{
	long fd = restore_call(r, SYS_socket, f->sk_family, f->sk_type | SOCK_CLOEXEC, f->sk_proto);
	if (fd < 0)
		return restore_fail(r, fd, "fd %d: cannot create a socket of family %u (socket)",
				    f->fd, f->sk_family);
	long ret = socket_setup(r, fd, f);
	if (ret < 0) {
		(void)restore_call(r, SYS_close, fd); /* the restore fails anyway */
		return ret;
	}
	return fd;
}

/* A connected socket whose peer is gone: one end of a pair whose other end we close. */
static long create_dead_socket(struct restore *r, const struct image_fd *f)
{
	int sv[2] = {-1, -1};
	uint64_t a;
	int type = f->sk_type == SOCK_DGRAM ? SOCK_DGRAM : SOCK_STREAM;
	long ret = inject_put(&r->inj, 0, sv, sizeof(sv), &a);
	if (ret >= 0)
		ret = restore_call(r, SYS_socketpair, AF_UNIX, type | SOCK_CLOEXEC, 0, a);
	if (ret >= 0)
		ret = inject_get(&r->inj, a, sv, sizeof(sv));
	if (ret >= 0)
		ret = restore_call(r, SYS_close, sv[1]);
	if (ret < 0)
		return restore_fail(r, ret, "fd %d: cannot create a closed socket (socketpair)",
				    f->fd);
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

/* Output the hooks' descriptor takes instead of /dev/null: standard output or error. */
static bool output_redirected(const struct restore *r, const struct image_fd *f)
{
	return r->output_fd >= 0 && (f->fd == 1 || f->fd == 2);
}

static long lost_output_fd(struct restore *r, const struct image_fd *f)
{
	if (output_redirected(r, f)) {
		long fd = restore_call(r, SYS_fcntl, r->output_fd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			return restore_fail(r, fd, "fd %d: cannot duplicate %s (fd %ld, F_DUPFD)",
					    f->fd, r->opts->hooks->output_name, r->output_fd);
		log_info("fd %d: its reader is gone, it goes to %s", f->fd,
			 r->opts->hooks->output_name);
		return fd;
	}
	log_warn("fd %d: its reader is gone, redirecting it to /dev/null", f->fd);
	long fd = open_path(r, "/dev/null", O_RDWR);
	return fd < 0 ? restore_fail(r, fd, "fd %d: cannot open /dev/null", f->fd) : fd;
}

static long max_old_fd(const struct image *img)
{
	long max_fd = 2;

	for (size_t i = 0; i < img->n_fds; i++)
		max_fd = img->fds[i].fd > max_fd ? img->fds[i].fd : max_fd;
	return max_fd;
}

long restore_output_fd_plan(const struct restore *r)
{
	const struct restore_hooks *h = r->opts->hooks;

	if (!h || !h->open_output)
		return -1;
	for (size_t i = 0; i < r->img->n_fds; i++) {
		const struct image_fd *f = &r->img->fds[i];
		/* above every old number, below the parking area of restore_fds() */
		if ((f->fd == 1 || f->fd == 2) && output_lost(r->img, f))
			return max_old_fd(r->img) + 1;
	}
	return -1;
}

int restore_output_open(const struct restore *r)
{
	int fd = r->opts->hooks->open_output(r->opts->hooks->arg);
	int rc = 0;

	if (fd < 0)
		return fd;
	/* without O_CLOEXEC: it crosses the exec; close_inherited() checks that it came */
	if (fd == r->output_fd)
		return fcntl(fd, F_SETFD, 0) < 0 ? -errno : 0;
	if (dup2(fd, r->output_fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static long simple_fd(struct restore *r, const struct image_fd *f, long nr, uint64_t a1,
		      uint64_t a2)
{
	long fd = restore_call(r, nr, a1, a2);
	return fd < 0 ? restore_fail(r, fd, "fd %d: cannot create %s", f->fd,
				     fd_kind_name(f->kind))
		      : fd;
}

/* Each returns the new descriptor, or a negative errno it has already logged. */
static long create_fd(struct restore *r, const struct image_fd *f, long *other)
{
	*other = -1;
	if (output_lost(r->img, f))
		return lost_output_fd(r, f);
	switch (f->kind) {
	case FD_REG:
	case FD_CHR:
		return create_reg(r, f);
	case FD_PIPE:
		return create_pipe(r, f, other);
	case FD_EVENTFD:
		return simple_fd(r, f, SYS_eventfd2, f->count, O_CLOEXEC);
	case FD_EPOLL:
		return simple_fd(r, f, SYS_epoll_create1, EPOLL_CLOEXEC, 0);
	case FD_SOCK_LISTEN:
	case FD_SOCK_DGRAM:
		return create_socket(r, f);
	case FD_SOCK_DEAD:
		return create_dead_socket(r, f);
	}
	return restore_fail(r, -EINVAL, "fd %d: unknown kind %u", f->fd, f->kind);
}

/* Give a new descriptor the file status flags (O_NONBLOCK, O_APPEND, ...) the old one had. */
static int set_flags(struct restore *r, long fd, const struct image_fd *f)
{
	long ret = restore_call(r, SYS_fcntl, fd, F_SETFL, f->flags & SETFL_MASK);
	return ret < 0 ? restore_fail(r, ret, "fd %d (%s): cannot set its flags %#x (F_SETFL)",
				      f->fd, f->path ? f->path : fd_kind_name(f->kind),
				      f->flags & SETFL_MASK)
		       : 0;
}

/* dup3 fd to `to`, then close fd. */
static int move_fd(struct restore *r, long fd, long to, int flags, const struct image_fd *f)
{
	long ret = restore_call(r, SYS_dup3, fd, to, flags);
	if (ret < 0)
		return restore_fail(r, ret, "fd %d: cannot move it from %ld to %ld (dup3)", f->fd,
				    fd, to);
	ret = restore_call(r, SYS_close, fd);
	return ret < 0 ? restore_fail(r, ret, "fd %d: cannot close %ld (close)", f->fd, fd) : 0;
}

/* The other end of a pipe goes to whichever old fd held it, if any; else it is closed. */
static int place_other_end(struct restore *r, long *parked, long park_base, size_t i, long other)
{
	const struct image *img = r->img;
	const struct image_fd *f = &img->fds[i];

	for (size_t j = i + 1; j < img->n_fds; j++) {
		const struct image_fd *g = &img->fds[j];
		if (g->kind == FD_PIPE && g->ino == f->ino && g->pipe_write != f->pipe_write &&
		    !output_lost(img, g) && parked[j] < 0) {
			int rc = set_flags(r, other, g);
			if (rc < 0)
				return rc;
			parked[j] = park_base + j;
			return move_fd(r, other, parked[j], O_CLOEXEC, g);
		}
	}
	long ret = restore_call(r, SYS_close, other);
	return ret < 0 ? restore_fail(r, ret, "fd %d: cannot close the unused end of pipe %lu",
				      f->fd, (unsigned long)f->ino)
		       : 0;
}

static int create_all(struct restore *r, long *parked, long park_base)
{
	const struct image *img = r->img;

	for (size_t i = 0; i < img->n_fds; i++) {
		const struct image_fd *f = &img->fds[i];
		long other;

		if (parked[i] >= 0)
			continue;
		long fd = create_fd(r, f, &other);
		if (fd < 0)
			return fd;
		int rc = set_flags(r, fd, f);
		if (rc < 0)
			return rc;
		parked[i] = park_base + i;
		rc = move_fd(r, fd, parked[i], O_CLOEXEC, f);
		if (rc < 0)
			return rc;
		if (other >= 0 && (rc = place_other_end(r, parked, park_base, i, other)) < 0)
			return rc;
	}
	return 0;
}

static int add_epoll_targets(struct restore *r, const struct image_fd *ep)
{
	for (uint32_t k = 0; k < ep->n_tfds; k++) {
		const struct image_epoll_tfd *t = &ep->tfds[k];
		struct epoll_event ev = {.events = t->events, .data.u64 = t->data};
		uint64_t a;
		long ret = inject_put(&r->inj, 0, &ev, sizeof(ev), &a);
		if (ret >= 0)
			ret = restore_call(r, SYS_epoll_ctl, ep->fd, EPOLL_CTL_ADD, t->fd, a);
		if (ret < 0)
			return restore_fail(r, ret, "fd %d: cannot add fd %d to it (epoll_ctl)",
					    ep->fd, t->fd);
	}
	return 0;
}

/*
 * Whatever the husk inherited from us must not leak into the service, but
 * the hooks' output descriptor, if it came, is kept until fds 1 and 2 have
 * their copies of it.
 */
static int close_inherited(struct restore *r)
{
	long ret;

	if (r->output_fd >= 0 && restore_call(r, SYS_fcntl, r->output_fd, F_GETFD) < 0)
		r->output_fd = -1; /* open_output failed in the husk and said why */
	if (r->output_fd < 0)
		ret = restore_call(r, SYS_close_range, 0, ~0U, 0);
	else if ((ret = restore_call(r, SYS_close_range, 0, r->output_fd - 1, 0)) >= 0)
		ret = restore_call(r, SYS_close_range, r->output_fd + 1, ~0U, 0);
	if (ret < 0)
		return restore_fail(r, ret, "cannot close the descriptors the husk inherited "
				    "(close_range)");
	return 0;
}

static int close_output(struct restore *r)
{
	if (r->output_fd < 0)
		return 0;
	long ret = restore_call(r, SYS_close, r->output_fd);
	if (ret < 0)
		return restore_fail(r, ret, "cannot close %s (fd %ld) once placed",
				    r->opts->hooks->output_name, r->output_fd);
	r->output_fd = -1;
	return 0;
}

int restore_fds(struct restore *r)
{
	const struct image *img = r->img;
	long max_fd = max_old_fd(img);
	int rc;

	long park_base = max_fd + 1 + 16;
	_cleanup_free_ long *parked = malloc(sizeof(long) * (img->n_fds + 1));
	if (!parked)
		return restore_fail(r, -ENOMEM, "no memory for %zu descriptors", img->n_fds);
	for (size_t i = 0; i < img->n_fds; i++)
		parked[i] = -1;

	rc = close_inherited(r);
	if (rc >= 0)
		rc = create_all(r, parked, park_base);
	if (rc >= 0)
		rc = close_output(r);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < img->n_fds; i++) {
		const struct image_fd *f = &img->fds[i];
		if (parked[i] < 0)
			continue;
		rc = move_fd(r, parked[i], f->fd, f->cloexec ? O_CLOEXEC : 0, f);
		if (rc < 0)
			return rc;
	}
	for (size_t i = 0; i < img->n_fds; i++)
		if (img->fds[i].kind == FD_EPOLL) {
			rc = add_epoll_targets(r, &img->fds[i]);
			if (rc < 0)
				return rc;
		}
	return 0;
}
