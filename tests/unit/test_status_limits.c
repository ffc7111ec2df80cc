/*
 * test_status_limits.c - the status socket and /metrics bound what a
 * client can cost (issue 8): a request head of at most 8 KiB, GET or HEAD
 * of /metrics only, 16 clients of each kind at a time, and 5 s per client
 * from connect to close whatever it does (a client trickling a byte a
 * second is cut off as surely as a silent one).
 *
 * The server runs on its own event loop in a thread; the test's clients are
 * plain blocking sockets on 127.0.0.1 and the server's unix socket.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "status.h"
#include "unit.h"

static char dir[] = "/tmp/checksync-unit-status-XXXXXX";
static char sock_path[100];
static int port;
static struct event_base *base;

static void fill(struct status_report *r, void *arg)
{
	(void)arg;
	status_report_service(r, "kv", "backup");
	status_report_gauge(r, "epoch", "", 42, "the epoch");
}

static volatile int stop_loop;

/* libevent is not set up for threads here: the loop's own timer looks for the stop. */
static void check_stop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	if (stop_loop)
		event_base_loopbreak(base);
}

static void *loop(void *arg)
{
	struct timeval tick = {.tv_usec = 100000};
	struct event *ev = event_new(base, -1, EV_PERSIST, check_stop, NULL);

	(void)arg;
	event_add(ev, &tick);
	event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
	event_free(ev);
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int tcp(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = 10};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int unix_client(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 10};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Everything until the server closes (or 10 s), NUL-terminated; caller frees. */
static char *read_all(int fd)
{
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap + 1);
	ssize_t n;

	while (len < cap && (n = read(fd, buf + len, cap - len)) > 0)
		len += n;
	buf[len] = 0;
	return buf;
}

static char *request(const char *req, size_t len)
{
	int fd = tcp();
	char *answer;

	if (fd < 0)
		return strdup("(connect failed)");
	(void)!write(fd, req, len);
	answer = read_all(fd);
	close(fd);
	return answer;
}

static void check_answer(const char *what, const char *req, const char *want)
{
	char *a = request(req, strlen(req));

	if (!strstr(a, want)) {
		fprintf(stderr, "%s: expected \"%s\" in: %.200s\n", what, want, a);
		unit_failures++;
	}
	free(a);
}

static void test_requests(void)
{
	char *big = malloc(10000);

	check_answer("GET", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "checksync_epoch{service=\"kv\"");
	check_answer("GET status line", "GET /metrics?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK\r\n");
	check_answer("HEAD", "HEAD /metrics HTTP/1.1\r\n\r\n", "Content-Length: ");
	check_answer("POST", "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "405");
	check_answer("other path", "GET /secrets HTTP/1.1\r\n\r\n", "404");
	check_answer("garbage", "\x16\x03\x01\x10\r\n\r\n", "400");
	memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
	memset(big + 26, 'a', 9000);
	memcpy(big + 9026, "\r\n\r\n", 5);
	check_answer("a 9 KB head", big, "431");
	free(big);
}

/* A client sending a byte a second is closed 5 s after it connected, not never. */
static void test_deadline(void)
{
	const char *req = "GET /metrics HTTP/1.1\r\nX-Slow: ";
	int fd = tcp();
	double t0 = now_s(), took;
	char c;

	CHECK(fd >= 0);
	(void)!write(fd, req, strlen(req));
	for (;;) {
		struct timeval tv = {.tv_sec = 1};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (write(fd, "a", 1) < 0 || read(fd, &c, 1) == 0 || now_s() - t0 > 20)
			break;
	}
	took = now_s() - t0;
	printf("a trickling /metrics client was closed after %.1f s\n", took);
	CHECK(took >= 4.5 && took < 7);
	close(fd);
}

/* Sixteen silent clients of each kind at a time; the seventeenth is closed at once. */
static void test_client_cap(int (*client)(void), const char *what)
{
	int fds[17];
	char c;
	double t0;
	ssize_t n;

	for (int i = 0; i < 16; i++)
		fds[i] = client();
	usleep(200000); /* let the loop accept them */
	t0 = now_s();
	fds[16] = client();
	CHECK(fds[16] >= 0);
	n = read(fds[16], &c, 1);
	printf("%s: 17th client: read %zd after %.2f s\n", what, n, now_s() - t0);
	CHECK(n == 0 && now_s() - t0 < 2);
	for (int i = 0; i < 17; i++)
		close(fds[i]);
	usleep(200000);
}

/* The status socket answers at once and closes, whoever asks. */
static void test_status_socket(void)
{
	int fd = unix_client();
	char *a = fd >= 0 ? read_all(fd) : strdup("");

	CHECK_CONTAINS(a, "checksync-status 1\nkv\tbackup\tepoch\t");
	free(a);
	if (fd >= 0)
		close(fd);
}

int main(void)
{
	struct status_server *srv = NULL;
	struct hostport hp = {.host = "127.0.0.1"};
	char err[512];
	pthread_t t;
	int probe;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);

	setvbuf(stdout, NULL, _IONBF, 0);
	/* As the daemons do: a client gone mid-write is EPIPE, not the death of the process that
	 * serves it (the server runs in ours) or of a test client writing after the close. */
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(dir))
		return 2;
	snprintf(sock_path, sizeof(sock_path), "%s/status.sock", dir);
	/* A free port: bind to 0, read it, let go. */
	probe = socket(AF_INET, SOCK_STREAM, 0);
	bind(probe, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(probe, (struct sockaddr *)&sin, &len);
	port = ntohs(sin.sin_port);
	close(probe);
	hp.port = port;
	base = event_base_new();
	CHECK_INT(status_server_new(base, sock_path, &hp, "checksync", fill, NULL, &srv, err,
				    sizeof(err)),
		  0);
	if (!srv) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	pthread_create(&t, NULL, loop, NULL);
	test_requests();
	test_client_cap(tcp, "metrics");
	test_status_socket();
	check_answer("after the cap", "GET /metrics HTTP/1.1\r\n\r\n", "200 OK");
	test_deadline();
	stop_loop = 1;
	pthread_join(t, NULL);
	status_server_free(srv);
	event_base_free(base);
	rmdir(dir);
	UNIT_EXIT();
}
