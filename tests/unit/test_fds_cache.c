/*
 * test_fds_cache.c - the descriptor table read with the socket cache
 * (capture/fds.c) is the one a fresh read gives, when a socket at a
 * descriptor is replaced or changes kind between stops.
 *
 * A real child holds a TCP connection to itself (a connected socket at
 * descriptor CONN) and answers commands on a pipe:
 *   'L': put a listening socket at CONN (dup2 over the connected one): same
 *        descriptor, another socket (inode);
 *   'U': put a socket at CONN that is neither connected nor listening;
 *   'l': make that one listen (bind, listen): same socket, new kind.
 * After each, capture_fds() with the cache must say what a capture without
 * the cache says, and the cache must have been used where nothing changed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capture/capture.h"
#include "unit.h"

#define CONN 40

static int cmd[2], ack[2];

static int tcp_socket(void)
{
	return socket(AF_INET, SOCK_STREAM, 0);
}

static int listen_any(int s)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 4) < 0)
		return -1;
	return s;
}

static void child(void)
{
	int l = listen_any(tcp_socket());
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int c = tcp_socket();
	char k;

	if (l < 0 || c < 0 || getsockname(l, (struct sockaddr *)&a, &al) < 0 ||
	    connect(c, (struct sockaddr *)&a, al) < 0 || accept(l, NULL, NULL) < 0 ||
	    dup2(c, CONN) < 0)
		_exit(2);
	close(c);
	(void)!write(ack[1], "r", 1);
	while (read(cmd[0], &k, 1) == 1) {
		int s = tcp_socket();
		if (k == 'L')
			s = listen_any(s);
		if (k == 'l')
			s = listen_any(CONN) < 0 ? -1 : CONN;
		if (s < 0 || (s != CONN && dup2(s, CONN) < 0))
			_exit(3);
		if (s != CONN)
			close(s);
		(void)!write(ack[1], "k", 1);
	}
	_exit(0);
}

static void tell(char k)
{
	char a;
	CHECK(write(cmd[1], &k, 1) == 1);
	CHECK(read(ack[0], &a, 1) == 1);
}

/* Kind of descriptor CONN in a capture of pid: through the cache k, or without one. */
static int conn_kind(pid_t pid, struct inject_cache *k, uint64_t *kept)
{
	struct capture c = {.pid = pid, .memfd = -1, .cache = k, .cache_ok = k != NULL};
	int kind = -1;

	c.img = image_new();
	CHECK(c.img != NULL);
	CHECK_INT(capture_fds(&c), 0);
	for (size_t i = 0; i < c.img->n_fds; i++)
		if (c.img->fds[i].fd == CONN)
			kind = c.img->fds[i].kind;
	if (kept)
		*kept = c.stats.fds_kept;
	image_free(c.img);
	return kind;
}

int main(void)
{
	struct inject_cache k = {.valid = true};
	uint64_t kept;
	char r;

	if (pipe(cmd) < 0 || pipe(ack) < 0)
		return 1;
	pid_t pid = fork();
	if (pid == 0)
		child();
	if (read(ack[0], &r, 1) != 1) {
		fprintf(stderr, "the child did not start\n");
		return 1;
	}

	CHECK_INT(conn_kind(pid, &k, NULL), FD_SOCK_DEAD);
	CHECK_INT(conn_kind(pid, &k, &kept), FD_SOCK_DEAD);
	CHECK(kept > 0); /* nothing changed: the connected sockets came from the cache */

	/* Another socket at the same descriptor: read afresh (its inode differs). */
	tell('L');
	CHECK_INT(conn_kind(pid, NULL, NULL), FD_SOCK_LISTEN);
	CHECK_INT(conn_kind(pid, &k, NULL), FD_SOCK_LISTEN);

	/* A socket not yet listening is not kept: when it listens, that is seen. */
	tell('U');
	CHECK_INT(conn_kind(pid, &k, NULL), FD_SOCK_DEAD);
	tell('l');
	CHECK_INT(conn_kind(pid, NULL, NULL), FD_SOCK_LISTEN);
	CHECK_INT(conn_kind(pid, &k, NULL), FD_SOCK_LISTEN);

	/* The listening one is kept from now on. */
	CHECK_INT(conn_kind(pid, &k, &kept), FD_SOCK_LISTEN);
	CHECK(kept > 0);

	close(cmd[1]);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	free(k.fds);
	UNIT_EXIT();
}
