/*
 * fds.c - the file-descriptor table.
 *
 * Each descriptor is classified from its /proc link and fdinfo. Sockets
 * and pipes are examined through a copy taken with pidfd_getfd(), so we ask
 * the kernel object itself instead of parsing /proc/net. Kinds we cannot
 * bring back faithfully are refused by name rather than silently dropped.
 */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "capture.h"
#include "log.h"
#include "util.h"

struct fdinfo {
	uint64_t pos;
	uint32_t flags;
	uint64_t eventfd_count;
	struct image_epoll_tfd *tfds;
	uint32_t n_tfds;
	size_t cap_tfds;
};

static int read_fdinfo(pid_t pid, int fd, struct fdinfo *fi)
{
	char path[64];
	_cleanup_free_ char *buf = NULL;
	size_t ntfd = fi->n_tfds;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", pid, fd);
	ssize_t r = read_file(path, &buf);
	if (r < 0)
		return r;
	for (char *l = buf; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		int tfd;
		unsigned events;
		unsigned long long data;
		if (sscanf(l, "pos: %lu", &fi->pos) == 1)
			continue;
		if (sscanf(l, "flags: %o", &fi->flags) == 1)
			continue;
		if (sscanf(l, "eventfd-count: %llx", &data) == 1) {
			fi->eventfd_count = data;
			continue;
		}
		if (sscanf(l, "tfd: %d events: %x data: %llx", &tfd, &events, &data) == 3) {
			struct image_epoll_tfd *t = array_push(&fi->tfds, &ntfd, &fi->cap_tfds,
							       sizeof(*t));
			if (!t)
				return -ENOMEM;
			t->fd = tfd;
			t->events = events;
			t->data = data;
		}
	}
	fi->n_tfds = ntfd;
	return 0;
}

static int steal_fd(int pidfd, int fd)
{
	int r = syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	return r < 0 ? -errno : r;
}

static int getsockopt_int(int fd, int level, int opt)
{
	int v = 0;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, level, opt, &v, &l) < 0)
		return -errno;
	return v;
}

/* *settled: the socket's kind cannot change any more (fd_cache). */
static int capture_socket(int pidfd, struct image_fd *f, bool *settled)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	_cleanup_close_ int sk = steal_fd(pidfd, f->fd);

	if (sk < 0)
		return sk;
	f->sk_family = getsockopt_int(sk, SOL_SOCKET, SO_DOMAIN);
	f->sk_type = getsockopt_int(sk, SOL_SOCKET, SO_TYPE);
	f->sk_proto = getsockopt_int(sk, SOL_SOCKET, SO_PROTOCOL);
	f->sk_reuseaddr = getsockopt_int(sk, SOL_SOCKET, SO_REUSEADDR) > 0;
	if (f->sk_family == AF_INET6)
		f->sk_v6only = getsockopt_int(sk, IPPROTO_IPV6, IPV6_V6ONLY) > 0;
	if (getsockname(sk, (struct sockaddr *)&ss, &sl) < 0)
		return -errno;
	f->data = malloc(sl);
	if (!f->data)
		return -ENOMEM;
	memcpy(f->data, &ss, sl);
	f->data_len = sl;

	if (getsockopt_int(sk, SOL_SOCKET, SO_ACCEPTCONN) > 0) {
		f->kind = FD_SOCK_LISTEN;
		f->count = SOMAXCONN;
		*settled = true;
	} else if (f->sk_type == SOCK_DGRAM &&
		   (f->sk_family == AF_INET || f->sk_family == AF_INET6)) {
		f->kind = FD_SOCK_DGRAM;
	} else {
		f->kind = FD_SOCK_DEAD;
		/*
		 * Connected: it never becomes a listener. One not yet connected
		 * (socket(), bind(), then a stop before listen()) may.
		 */
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		*settled = f->sk_type == SOCK_STREAM &&
			   getpeername(sk, (struct sockaddr *)&peer, &pl) == 0;
	}
	return 0;
}

/* Copy what is buffered in a pipe without taking it: tee() into a pipe of ours. */
static int capture_pipe_data(int pidfd, struct image_fd *f)
{
	_cleanup_close_ int rd = steal_fd(pidfd, f->fd);
	int p[2];

	if (rd < 0)
		return rd;
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	_cleanup_close_ int p0 = p[0], p1 = p[1];
	fcntl(p1, F_SETPIPE_SZ, 1 << 20);
	ssize_t n = tee(rd, p1, 1 << 20, SPLICE_F_NONBLOCK);
	if (n <= 0)
		return 0;
	f->data = malloc(n);
	if (!f->data)
		return -ENOMEM;
	n = read(p0, f->data, n);
	f->data_len = n > 0 ? n : 0;
	return 0;
}

static int classify(pid_t pid, int pidfd, struct image_fd *f, const char *link, bool *settled)
{
	unsigned long long ino;
	char path[64];
	struct stat st;

	if (sscanf(link, "socket:[%llu]", &ino) == 1)
		return capture_socket(pidfd, f, settled);
	if (sscanf(link, "pipe:[%llu]", &ino) == 1) {
		f->kind = FD_PIPE;
		f->ino = ino;
		f->pipe_write = (f->flags & O_ACCMODE) == O_WRONLY;
		return f->pipe_write ? 0 : capture_pipe_data(pidfd, f);
	}
	if (strcmp(link, "anon_inode:[eventfd]") == 0) {
		f->kind = FD_EVENTFD;
		return 0;
	}
	if (strcmp(link, "anon_inode:[eventpoll]") == 0) {
		f->kind = FD_EPOLL;
		return 0;
	}
	if (link[0] != '/')
		return -ENOTSUP;
	size_t l = strlen(link);
	if (l > 10 && strcmp(link + l - 10, " (deleted)") == 0)
		return -ENOENT;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, f->fd);
	if (stat(path, &st) < 0)
		return -errno;
	if (S_ISCHR(st.st_mode))
		f->kind = FD_CHR;
	else if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
		f->kind = FD_REG;
	else
		return -ENOTSUP;
	f->path = strdup(link);
	return f->path ? 0 : -ENOMEM;
}

/* The socket inode a /proc fd link names, or 0. */
static uint64_t socket_ino(const char *link)
{
	unsigned long long ino;
	return sscanf(link, "socket:[%llu]", &ino) == 1 ? ino : 0;
}

static struct fd_cache *cached_fd(const struct capture *c, int fd, uint64_t ino)
{
	struct inject_cache *k = c->cache;
	for (size_t i = 0; k && c->cache_ok && ino && i < k->n_fds; i++)
		if (k->fds[i].fd == fd && k->fds[i].ino == ino)
			return &k->fds[i];
	return NULL;
}

/* The image's descriptor from the cache: everything fdinfo and the socket said last stop. */
static int push_cached(struct image *img, const struct fd_cache *e)
{
	struct image_fd *f = array_push(&img->fds, &img->n_fds, &img->cap_fds, sizeof(*f));
	if (!f)
		return -ENOMEM;
	*f = e->f;
	f->data = NULL;
	if (e->f.data_len) {
		if (!(f->data = malloc(e->f.data_len)))
			return -ENOMEM;
		memcpy(f->data, e->addr, e->f.data_len);
	}
	return 0;
}

/* Remember a settled socket for the next stop's table (*next, swapped in at the end). */
static int remember_fd(struct fd_cache **next, size_t *n, size_t *cap, const struct image_fd *f,
		       uint64_t ino)
{
	if (f->data_len > sizeof((*next)->addr))
		return 0;
	struct fd_cache *e = array_push(next, n, cap, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->fd = f->fd;
	e->ino = ino;
	e->f = *f;
	e->f.path = NULL;
	e->f.tfds = NULL;
	e->f.n_tfds = 0;
	memcpy(e->addr, f->data, f->data_len);
	e->f.data = NULL;
	return 0;
}

struct fd_walk {
	int dir; /* /proc/PID/fd */
	struct fd_cache *next;
	size_t n_next, cap_next;
};

static int capture_fd(struct capture *c, int pidfd, const char *name, struct fd_walk *w)
{
	struct image *img = c->img;
	struct fdinfo fi = {0};
	char link[4096];
	bool settled = false;
	int fd = atoi(name), r;

	/* Relative to the open directory: the kernel walks one name, not /proc/PID/fd/N. */
	ssize_t len = readlinkat(w->dir, name, link, sizeof(link) - 1);
	if (len < 0)
		return errno == ENOENT ? 0 : -errno;
	link[len] = 0;
	uint64_t ino = socket_ino(link);
	const struct fd_cache *e = cached_fd(c, fd, ino);
	if (e) {
		c->stats.fds_kept++;
		r = push_cached(img, e);
		struct fd_cache *keep = r < 0 ? NULL : array_push(&w->next, &w->n_next, &w->cap_next,
								   sizeof(*keep));
		if (keep)
			*keep = *e;
		return r < 0 ? r : keep ? 0 : -ENOMEM;
	}
	c->stats.fds_read++;
	r = read_fdinfo(c->pid, fd, &fi);
	if (r < 0) {
		free(fi.tfds);
		return r == -ENOENT ? 0 : r;
	}
	struct image_fd *f = array_push(&img->fds, &img->n_fds, &img->cap_fds, sizeof(*f));
	if (!f) {
		free(fi.tfds);
		return -ENOMEM;
	}
	f->fd = fd;
	f->cloexec = fi.flags & O_CLOEXEC;
	f->flags = fi.flags & ~O_CLOEXEC;
	f->pos = fi.pos;
	f->count = fi.eventfd_count;
	f->tfds = fi.tfds;
	f->n_tfds = fi.n_tfds;
	r = classify(c->pid, pidfd, f, link, &settled);
	if (r == -ENOTSUP)
		return log_error_errno(r, "fd %d of pid %d (%s) is of a kind CheckSync cannot "
				       "restore", fd, c->pid, link);
	if (r == -ENOENT)
		return log_error_errno(r, "fd %d of pid %d is a deleted file (%s)", fd, c->pid,
				       link);
	if (r < 0)
		return log_error_errno(r, "cannot capture fd %d of pid %d (%s)", fd, c->pid, link);
	return settled && c->cache ? remember_fd(&w->next, &w->n_next, &w->cap_next, f, ino) : 0;
}

/*
 * Each descriptor costs its /proc link, its fdinfo and, for a socket, a
 * copy and six getsockopt()s: 21 us a descriptor, 0.48 ms of each stop of
 * the paper's workload (16 connections; measured, rdtsc, loaded machine).
 * A socket at the same descriptor with the same inode as at the last stop
 * is the same socket, and a listening or connected one keeps its kind and
 * address: only its link is read again. Its status flags (fcntl F_SETFL)
 * are taken from the cache too; they are read afresh with the rest of the
 * inject cache (every CACHE_REFRESH_EPOCHS, full epochs, a change of the
 * signal masks: c->cache_ok).
 */
int capture_fds(struct capture *c)
{
	char path[64];
	struct dirent *de;
	struct fd_walk w = {0};
	int r = 0;

	_cleanup_close_ int pidfd = syscall(SYS_pidfd_open, c->pid, 0);
	if (pidfd < 0)
		return log_error_errno(-errno, "pidfd_open(%d) failed", c->pid);
	snprintf(path, sizeof(path), "/proc/%d/fd", c->pid);
	DIR *d = opendir(path);
	if (!d)
		return log_error_errno(-errno, "cannot list %s", path);
	w.dir = dirfd(d);
	while ((de = readdir(d)) && r >= 0) {
		if (de->d_name[0] == '.')
			continue;
		r = capture_fd(c, pidfd, de->d_name, &w);
	}
	closedir(d);
	/* What this stop found is the cache now; a failed stop leaves none. */
	if (c->cache) {
		free(c->cache->fds);
		c->cache->fds = r < 0 ? (free(w.next), NULL) : w.next;
		c->cache->n_fds = r < 0 ? 0 : w.n_next;
		c->cache->cap_fds = r < 0 ? 0 : w.cap_next;
	} else {
		free(w.next);
	}
	return r;
}
