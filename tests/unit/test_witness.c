/*
 * test_witness.c - the etcd witness client (common/witness.c) against a real
 * etcd (Debian's etcd-server) on 127.0.0.1: two daemons' witnesses for one
 * service, A and B, as a primary and its backup would hold them.
 *
 *   - A takes the key; B cannot while A's lease lives, and sees A's name;
 *   - A lets go (revoke): B takes it;
 *   - B stops renewing (a dead host): A gets the key only after the moment
 *     B itself counted its lease alive until (the rule the primary's freeze
 *     relies on), and within TTL + 1.5 s;
 *   - an etcd that does not answer: no key, an error naming the URL.
 *
 * `test_witness bench N` measures the round trip of N keepalives and N
 * take transactions instead (README: why the JSON gateway).
 * Skipped (77) without an etcd binary.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include "config.h"
#include "util.h"
#include "witness.h"
#include "unit.h"

static struct event_base *base;
static char datadir[] = "/tmp/checksync-unit-etcd-XXXXXX";
static pid_t etcd_pid;

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		exit(2);
	close(fd);
	return ntohs(a.sin_port);
}

static const char *etcd_binary(void)
{
	static const char *const where[] = {"/usr/bin/etcd", "/usr/local/bin/etcd"};
	for (size_t i = 0; i < ARRAY_SIZE(where); i++)
		if (access(where[i], X_OK) == 0)
			return where[i];
	return NULL;
}

static void start_etcd(const char *bin, int client, int peer)
{
	char curl[64], purl[64], cluster[96], log[4200];

	snprintf(curl, sizeof(curl), "http://127.0.0.1:%d", client);
	snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", peer);
	snprintf(cluster, sizeof(cluster), "u=%s", purl);
	snprintf(log, sizeof(log), "%s/etcd.log", datadir);
	etcd_pid = fork();
	if (etcd_pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(bin, bin, "--name", "u", "--data-dir", datadir, "--listen-client-urls", curl,
		      "--advertise-client-urls", curl, "--listen-peer-urls", purl,
		      "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster,
		      "--heartbeat-interval", "50", "--election-timeout", "500", NULL);
		_exit(127);
	}
}

static void stop_etcd(void)
{
	if (etcd_pid > 0) {
		kill(etcd_pid, SIGKILL);
		waitpid(etcd_pid, NULL, 0);
	}
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", datadir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", datadir);
}

/* Runs the loop until cond(arg) or timeout_ms; the time it took (ms), or -1. */
static long run_until(bool (*cond)(void *), void *arg, long timeout_ms)
{
	uint64_t t0 = now_us();
	struct timeval tv = {.tv_sec = 0, .tv_usec = 5000};

	while (!cond(arg)) {
		if (now_us() - t0 > (uint64_t)timeout_ms * 1000)
			return -1;
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	return (long)((now_us() - t0) / 1000);
}

static bool holds(void *w) { return witness_holds(w, now_us()); }
static bool never(void *w) { (void)w; return false; }
static bool has_holder(void *w) { return witness_holder(w)[0] != 0; }
static bool has_error(void *w) { return witness_error(w)[0] != 0; }

static struct witness *make(struct urllist *u, const char *who)
{
	struct witness *w = NULL;
	CHECK_INT(witness_new(base, u, "kv", who, 1000, 50, NULL, NULL, NULL, &w), 0);
	return w;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void print_stats(const char *what, uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	printf("%-26s n=%zu p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us\n", what, n,
	       (double)v[n / 2], (double)v[n * 9 / 10], (double)v[n * 99 / 100], (double)v[n - 1]);
}

struct counter {
	struct witness *w;
	uint64_t until;
};

/* A keepalive has been answered since: witness_until() moved. */
static bool renewed(void *arg)
{
	struct counter *c = arg;
	return witness_until(c->w) != c->until;
}

static int bench(struct urllist *u, size_t n)
{
	struct witness *a = make(u, "bench-a"), *b = make(u, "bench-b");
	uint64_t *ka = calloc(n, sizeof(*ka)), *tx = calloc(n, sizeof(*tx));
	size_t got = 0;

	witness_want(a, true);
	if (run_until(holds, a, 5000) < 0)
		return fprintf(stderr, "no key\n"), 1;
	/* Keepalives come every TTL/3; their round trips are what the witness saw. */
	for (got = 0; got < n; got++) {
		struct counter c = {a, witness_until(a)};
		if (run_until(renewed, &c, 2000) < 0)
			break;
		ka[got] = witness_last_rtt_us(a);
	}
	print_stats("keepalive round trip", ka, got);
	/* B's take is refused while A holds; it asks again every 100 ms: each a txn. */
	witness_want(b, true);
	for (size_t i = 0; i < n; i++) {
		uint64_t before = witness_requests(b);
		struct counter c = {b, 0};
		(void)c;
		while (witness_requests(b) == before)
			run_until(never, NULL, 10);
		tx[i] = witness_last_rtt_us(b);
	}
	print_stats("txn (take) round trip", tx + 1, n - 1); /* the first is B's grant */
	witness_free(a);
	witness_free(b);
	free(ka);
	free(tx);
	return 0;
}

int main(int argc, char **argv)
{
	const char *bin = etcd_binary();
	char url[64], dead[64];
	int client = free_port(), peer = free_port();

	if (!bin) {
		printf("no etcd binary: skipped\n");
		return 77;
	}
	if (!mkdtemp(datadir))
		return 2;
	base = event_base_new();
	start_etcd(bin, client, peer);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", client);
	snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", free_port());
	char *urls[] = {url, NULL};
	struct urllist u = {.line = url, .v = urls, .n = 1};

	if (argc > 2 && strcmp(argv[1], "bench") == 0) {
		struct witness *probe = make(&u, "probe");
		witness_want(probe, true);
		run_until(holds, probe, 10000);
		witness_free(probe);
		int r = bench(&u, (size_t)atoi(argv[2]));
		stop_etcd();
		event_base_free(base);
		return r;
	}

	struct witness *a = make(&u, "a.test"), *b = make(&u, "b.test");
	/* etcd takes a moment to start: the witness keeps asking */
	witness_want(a, true);
	CHECK(run_until(holds, a, 10000) >= 0);
	CHECK(witness_until(a) > now_us());

	witness_want(b, true);
	CHECK(run_until(has_holder, b, 3000) >= 0);
	CHECK_STR(witness_holder(b), "a.test");
	CHECK(run_until(holds, b, 1500) < 0); /* A's lease lives: never B's */
	CHECK(holds(a));

	witness_want(a, false); /* revoke */
	long took = run_until(holds, b, 2000);
	CHECK(took >= 0);
	printf("B took the key %ld ms after A let go\n", took);
	CHECK(!holds(a));
	witness_want(a, true);
	CHECK(run_until(holds, a, 1500) < 0);
	CHECK_STR(witness_holder(a), "b.test");

	/* B's host dies: no more keepalives, no revoke. */
	uint64_t b_until = witness_until(b), t_dead = now_us();
	witness_free(b);
	took = run_until(holds, a, 4000);
	uint64_t t_took = now_us();
	CHECK(took >= 0);
	printf("A took the key %ld ms after B stopped (B counted its lease until +%ld ms)\n", took,
	       (long)((int64_t)(b_until - t_dead) / 1000));
	/* The property a frozen primary relies on: nobody else has it before that moment. */
	CHECK(t_took >= b_until);

	/* A member that does not answer: no key, and the error names it. */
	char *deads[] = {dead, NULL};
	struct urllist du = {.line = dead, .v = deads, .n = 1};
	struct witness *c = make(&du, "c.test");
	witness_want(c, true);
	CHECK(run_until(has_error, c, 3000) >= 0);
	CHECK_CONTAINS(witness_error(c), dead);
	CHECK(!holds(c));
	witness_free(c);

	witness_free(a);
	stop_etcd();
	event_base_free(base);
	UNIT_EXIT();
}
