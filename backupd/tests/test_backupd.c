/*
 * test_backupd.c - checksync-backupd as a running daemon, driven by a test
 * primary over real mutual TLS (tclient.c).
 *
 *   test_backupd unit DAEMON                  no root needed, seconds
 *   test_backupd e2e DAEMON PRIMARYD SRCDIR   a real Go service: root, ptrace, go
 *
 * unit: a bad configuration is one line and exit EXIT_CONFIG (78); a certificate from
 * another CA is refused; an unknown service gets ERROR; a synthetic image
 * is committed and ACKed, a delta on it too, with heartbeats flowing; a
 * delta on the wrong base gets "base epoch N, have M"; a torn epoch is
 * not applied; garbage closes the connection and nothing else; the status
 * command and /metrics tell the epoch; kill -9 and a restart keep it; the
 * fence hook runs before a takeover, and a restore that fails is retried;
 * SIGTERM stops it with status 0.
 *
 * e2e: the kvserver workload is started and filled with keys, dumped with
 * `checksync-primaryd dump`, and sent as one full epoch; once ACKed, the
 * service is killed and the primary goes silent. The backup must restore
 * it (same instance, same keys over HTTP) and run the takeover hook, and
 * still know it serves that process after a kill -9 and a restart. Then
 * again from a fresh state directory: full epoch, a torn epoch of garbage
 * pages, kill -9 of the daemon, restart: it must come back with the ACKed
 * epoch and take over from the image it read from disk.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "config.h"
#include "log.h"
#include "tclient.h"
#include "tls.h"
#include "unit.h"
#include "util.h"

struct env {
	const char *tmp, *daemon, *conf, *log;
	int port, metrics_port;
	SSL_CTX *primary, *other;
	pid_t pid;
	int notify_fd; /* our end of NOTIFY_SOCKET */
	pthread_t notify_thread;
	bool notify_running;
	pthread_mutex_t notify_lock;
	char notified[16384]; /* the newest notifications, one a line */
	size_t notified_len;
};

/* ---------- the daemon ---------- */

static void write_daemon_conf(struct env *e)
{
	char text[4096];

	snprintf(text, sizeof(text),
		 "[daemon]\n"
		 "listen = 127.0.0.1:%d\n"
		 "state_dir = %s\n"
		 "services_dir = %s\n"
		 "status_socket = %s\n"
		 "metrics_listen = 127.0.0.1:%d\n"
		 "[tls]\n"
		 "ca = %s\n"
		 "cert = %s\n"
		 "key = %s\n",
		 e->port, t_path(e->tmp, "state"), t_path(e->tmp, "services"),
		 t_path(e->tmp, "status.sock"), e->metrics_port, t_path(e->tmp, "ca.crt"),
		 t_path(e->tmp, "backup.crt"), t_path(e->tmp, "backup.key"));
	e->conf = strdup(t_path(e->tmp, "backup.conf"));
	t_write_file(e->conf, text);
	mkdir(t_path(e->tmp, "services"), 0755);
}

static void write_service(struct env *e, const char *name, const char *body)
{
	char file[128];

	snprintf(file, sizeof(file), "services/%s.conf", name);
	t_write_file(t_path(e->tmp, file), body);
}

static bool status_socket_answers(struct env *e)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", t_path(e->tmp, "status.sock"));
	ok = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	close(fd);
	return ok;
}

static bool start_daemon(struct env *e)
{
	char *argv[] = {(char *)e->daemon, "--config", (char *)e->conf, "-v", NULL};
	uint64_t deadline = t_now_ms() + 10000;

	e->pid = t_spawn(argv, e->log);
	while (t_now_ms() < deadline) {
		if (status_socket_answers(e))
			return true;
		if (t_wait_exit(e->pid, 0) != -1)
			break;
		t_sleep_ms(20);
	}
	fprintf(stderr, "the daemon did not start; see %s\n", e->log);
	return false;
}

/* Send sig and wait: the wait status, or -1. */
static int stop_daemon(struct env *e, int sig)
{
	int st;

	kill(e->pid, sig);
	st = t_wait_exit(e->pid, 15000);
	if (st == -1) {
		kill(e->pid, SIGKILL);
		t_wait_exit(e->pid, 5000);
	}
	e->pid = 0;
	return st;
}

/* `checksync-backupd status`: its output (malloc'd). */
static char *status_of(struct env *e)
{
	const char *out = t_path(e->tmp, "status.out");

	unlink(out);
	t_sh(out, "'%s' status --config '%s'", e->daemon, e->conf);
	return t_read_file(out);
}

/* The value printed after a status row's name, as a number ("-" is -1). */
static long long status_value(const char *text, const char *service, const char *row)
{
	const char *s = text ? strstr(text, service) : NULL;
	const char *p = s ? strstr(s, row) : NULL;

	if (!p)
		return -2;
	p += strlen(row);
	while (*p == ' ')
		p++;
	return *p == '-' ? -1 : strtoll(p, NULL, 10);
}

static bool log_contains(struct env *e, const char *needle, int ms)
{
	return t_wait_file_contains(e->log, needle, ms);
}

/* ---------- what the daemon tells systemd, and what it shares with its children ---------- */

/*
 * Play systemd: read NOTIFY_SOCKET all the time, as systemd does. A reader
 * that stops would block the daemon: sd_notify() waits once ten datagrams
 * are queued (net.unix.max_dgram_qlen).
 */
static void *notify_reader(void *arg)
{
	struct env *e = arg;
	char buf[2048];
	ssize_t n;

	/*
	 * Until teardown's shutdown(): from then on recv() returns 0 at once,
	 * forever, so 0 ends the loop (sd_notify sends no empty datagram).
	 */
	while ((n = recv(e->notify_fd, buf, sizeof(buf) - 1, 0)) > 0) {
		pthread_mutex_lock(&e->notify_lock);
		if (e->notified_len + n + 2 > sizeof(e->notified))
			e->notified_len = 0; /* keep the newest */
		memcpy(e->notified + e->notified_len, buf, n);
		e->notified_len += n;
		e->notified[e->notified_len++] = '\n';
		e->notified[e->notified_len] = 0;
		pthread_mutex_unlock(&e->notify_lock);
	}
	return NULL;
}

/* And a watchdog of 200 ms. */
static int listen_notify(struct env *e)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", t_path(e->tmp, "notify.sock"));
	e->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (e->notify_fd < 0 || bind(e->notify_fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		return -errno;
	pthread_mutex_init(&e->notify_lock, NULL);
	if (pthread_create(&e->notify_thread, NULL, notify_reader, e) != 0)
		return -EAGAIN;
	e->notify_running = true;
	setenv("NOTIFY_SOCKET", sun.sun_path, 1);
	setenv("WATCHDOG_USEC", "200000", 1);
	return 0;
}

/* Wait up to ms for a notification containing needle. */
static bool notified(struct env *e, const char *needle, int ms)
{
	uint64_t deadline = t_now_ms() + ms;
	bool found;

	do {
		pthread_mutex_lock(&e->notify_lock);
		found = strstr(e->notified, needle) != NULL;
		pthread_mutex_unlock(&e->notify_lock);
		if (found)
			return true;
		t_sleep_ms(20);
	} while (t_now_ms() < deadline);
	return false;
}

/* A field of /proc/PID/status, as hex (SigIgn, SigBlk, ...). */
static unsigned long long proc_status_hex(pid_t pid, const char *field)
{
	char path[64], *text, *p;
	unsigned long long v = ~0ull;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	text = t_read_file(path);
	if (text && (p = strstr(text, field)))
		v = strtoull(p + strlen(field), NULL, 16);
	free(text);
	return v;
}

/* Every descriptor from 3 up is close-on-exec: a hook or a restored service gets none of ours. */
static bool all_cloexec(pid_t pid)
{
	char dir[64];
	DIR *d;
	struct dirent *de;
	bool ok = true;

	snprintf(dir, sizeof(dir), "/proc/%d/fdinfo", pid);
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		char path[400], *text, *flags;

		if (de->d_name[0] == '.' || atoi(de->d_name) < 3)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		text = t_read_file(path);
		flags = text ? strstr(text, "flags:") : NULL;
		if (flags && !(strtoul(flags + 6, NULL, 8) & O_CLOEXEC)) {
			fprintf(stderr, "  fd %s of pid %d is not close-on-exec\n", de->d_name,
				pid);
			ok = false;
		}
		free(text);
	}
	if (d)
		closedir(d);
	return d && ok;
}

/* ---------- the primary ---------- */

static struct tclient *connect_as(struct env *e, SSL_CTX *ctx)
{
	char err[512];
	struct tclient *c = tc_connect(ctx, e->port, err, sizeof(err));

	if (!c)
		fprintf(stderr, "connect: %s\n", err);
	return c;
}

/* Connect, HELLO, and expect the backup's HELLO back. */
static struct tclient *hello(struct env *e, const char *service)
{
	struct tclient *c = connect_as(e, e->primary);
	struct wire_msg m;

	if (!c)
		return NULL;
	CHECK_INT(tc_hello(c, service), 0);
	CHECK_INT(tc_recv(c, &m, 5000, 0), 1);
	CHECK_INT(m.type, WIRE_HELLO);
	if (m.type != WIRE_HELLO) {
		tc_close(c);
		return NULL;
	}
	CHECK_INT(m.hello.role, 1);
	CHECK_STR(m.hello.service, service);
	return c;
}

/* The next message must be type (an ACK of epoch, or an ERROR containing text). */
static void expect(struct tclient *c, enum wire_type type, uint64_t epoch, const char *text, int ms,
		   int hb_ms)
{
	struct wire_msg m;
	int r = tc_recv(c, &m, ms, hb_ms);

	CHECK_INT(r, 1);
	if (r != 1) {
		fprintf(stderr, "  waiting for %s: %s\n", wire_type_name(type),
			r == 0 ? "timed out" : c->err);
		return;
	}
	CHECK_STR(wire_type_name(m.type), wire_type_name(type));
	if (m.type == WIRE_ACK)
		CHECK_INT(m.ack.epoch, epoch);
	if (m.type == WIRE_ERROR) {
		CHECK_CONTAINS(m.error.reason, text);
		if (epoch) /* for an ERROR, the code expected */
			CHECK_STR(wire_error_code_name(m.error.code), wire_error_code_name(epoch));
		if (type != WIRE_ERROR)
			fprintf(stderr, "  the backup says: %s\n", m.error.reason);
	}
}

static void expect_closed(struct tclient *c)
{
	struct wire_msg m;
	CHECK_INT(tc_recv(c, &m, 5000, 0), -1);
}

/* ---------- certificates and the TLS contexts ---------- */

static int setup(struct env *e, const char *prefix)
{
	char err[512];
	int r;

	e->tmp = t_tmpdir(prefix);
	if (!e->tmp)
		return 2;
	e->log = strdup(t_path(e->tmp, "daemon.log"));
	r = t_make_certs(e->tmp);
	if (r)
		return r;
	e->primary = tls_client_ctx(t_path(e->tmp, "ca.crt"), t_path(e->tmp, "primary.crt"),
				    t_path(e->tmp, "primary.key"), err, sizeof(err));
	e->other = tls_client_ctx(t_path(e->tmp, "ca.crt"), t_path(e->tmp, "other.crt"),
				  t_path(e->tmp, "other.key"), err, sizeof(err));
	if (!e->primary || !e->other) {
		fprintf(stderr, "TLS context: %s\n", err);
		return 1;
	}
	e->port = t_free_port();
	e->metrics_port = t_free_port();
	write_daemon_conf(e);
	if (listen_notify(e) < 0) {
		perror("notify socket");
		return 1;
	}
	return 0;
}

static void teardown(struct env *e)
{
	if (e->pid > 0)
		stop_daemon(e, SIGKILL);
	SSL_CTX_free(e->primary);
	SSL_CTX_free(e->other);
	free((char *)e->conf);
	/*
	 * The reader writes into *e, which lives in run_unit()'s frame: it must be
	 * gone before that frame is. Left running, it wrote into the stack that
	 * exit()'s handlers (OPENSSL_cleanup) ran on: their SEGV, now and then.
	 */
	if (e->notify_fd > 0) {
		shutdown(e->notify_fd, SHUT_RDWR); /* ends the reader's recv() */
		if (e->notify_running)
			pthread_join(e->notify_thread, NULL);
		close(e->notify_fd);
	}
	if (!unit_failures && !getenv("CHECKSYNC_TEST_KEEP"))
		t_rm_rf(e->tmp);
	else
		fprintf(stderr, "files kept in %s (daemon log: %s)\n", e->tmp, e->log);
	free((char *)e->log);
}

/* ================= unit ================= */

#define ANON 0x10000000ull

static uint8_t synth_pages[8 * 4096];

static void test_bad_config(struct env *e)
{
	const char *bad = t_path(e->tmp, "bad.conf"), *out = t_path(e->tmp, "bad.out");
	char *text;

	t_write_file(bad, "[daemon]\nlisten = 127.0.0.1:1\nlisten_here = 1\n");
	CHECK_INT(t_sh(out, "'%s' --config '%s'", e->daemon, bad), EXIT_CONFIG);
	text = t_read_file(out);
	CHECK_CONTAINS(text, "bad.conf:3:");
	CHECK(text && strchr(text, '\n') == text + strlen(text) - 1); /* one line */
	free(text);
}

static void test_refusals(struct env *e)
{
	struct tclient *c;
	struct wire_msg m;

	/* A certificate from another CA: no HELLO ever comes back. */
	c = connect_as(e, e->other);
	if (c) {
		tc_hello(c, "svc");
		CHECK_INT(tc_recv(c, &m, 5000, 0), -1);
		tc_close(c);
	}
	CHECK(log_contains(e, "refused connection from 127.0.0.1", 5000));

	/* An unknown service. */
	c = connect_as(e, e->primary);
	if (c) {
		CHECK_INT(tc_hello(c, "nope"), 0);
		expect(c, WIRE_ERROR, WIRE_ERR_WRONG_SERVICE, "unknown service 'nope'", 5000, 0);
		expect_closed(c);
		tc_close(c);
	}

	/* A service whose primary must be someone else (primary = in its file). */
	c = connect_as(e, e->primary);
	if (c) {
		CHECK_INT(tc_hello(c, "elsewhere"), 0);
		expect(c, WIRE_ERROR, 0,
		       "the certificate names CN primary.test, DNS:primary.test, IP:127.0.0.1, not "
		       "elsewhere's primary 'other.test'",
		       5000, 0);
		tc_close(c);
	}
}

static void test_epochs(struct env *e, struct image *img)
{
	struct tc_run full = {ANON, 8, synth_pages}, one = {ANON + 3 * 4096, 1, synth_pages};
	struct tclient *c = hello(e, "svc");
	struct wire_msg m;

	if (!c)
		return;
	CHECK_INT(tc_send_epoch(c, img, 1, 0, &full, 1, UINT64_MAX), 0);
	expect(c, WIRE_ACK, 1, NULL, 10000, 50);
	CHECK_INT(tc_send_epoch(c, img, 2, 1, &one, 1, UINT64_MAX), 0);
	expect(c, WIRE_ACK, 2, NULL, 10000, 50);
	/* Heartbeats come every 50 ms, with the backup's epoch. */
	CHECK_INT(tc_recv(c, &m, 300, 50), 0);
	CHECK(c->heartbeats_seen >= 3);
	CHECK_INT(c->last_heartbeat_epoch, 2);

	/* A delta on an epoch the backup does not have (it may hang up before we are done). */
	(void)tc_send_epoch(c, img, 4, 3, &one, 1, UINT64_MAX);
	expect(c, WIRE_ERROR, 0, "base epoch 3, have 2", 5000, 0);
	expect_closed(c);
	tc_close(c);

	/* Torn halfway through PAGES: not applied, so epoch 3 still builds on 2. */
	c = hello(e, "svc");
	if (c) {
		CHECK_INT(tc_send_epoch(c, img, 3, 2, &full, 1, 2), 0);
		tc_close(c);
	}
	CHECK(log_contains(e, "svc: torn epoch 3", 5000));
	c = hello(e, "svc");
	if (c) {
		CHECK_INT(tc_send_epoch(c, img, 3, 2, &one, 1, UINT64_MAX), 0);
		expect(c, WIRE_ACK, 3, NULL, 10000, 50);
		tc_close(c);
	}

	/* Garbage: the decoder's reason comes back, and only this connection is closed. */
	c = hello(e, "svc");
	if (c) {
		CHECK_INT(tc_send_raw(c, "\xc1\xc1\xc1\xc1", 4), 0);
		expect(c, WIRE_ERROR, 0, "", 5000, 0);
		expect_closed(c);
		tc_close(c);
	}
	CHECK(log_contains(e, "svc: bad message from 127.0.0.1", 5000));
}

static void test_notify_and_fds(struct env *e)
{
	unsigned long long ign = proc_status_hex(e->pid, "SigIgn:");

	CHECK(notified(e, "READY=1", 5000));
	CHECK(notified(e,
		       "STATUS=waiting for doomed's primary; waiting for elsewhere's primary; "
		       "epoch 3 of svc, lag",
		       5000));
	CHECK(notified(e, "WATCHDOG=1", 2000));
	/* SIGPIPE ignored (tls.h), SIGCHLD left alone: a restored service inherits dispositions. */
	CHECK(ign & (1ull << (SIGPIPE - 1)));
	CHECK(!(ign & (1ull << (SIGCHLD - 1))));
	CHECK(all_cloexec(e->pid));
}

static void test_status(struct env *e, long long epoch)
{
	char *text = status_of(e), *metrics;
	char want[128];
	int code = 0;

	CHECK_CONTAINS(text, "svc\n  role                     backup\n");
	CHECK_INT(status_value(text, "svc\n", "  epoch "), epoch);
	CHECK_INT(status_value(text, "svc\n", "  acked epoch "), epoch);
	CHECK_INT(status_value(text, "svc\n", "  durable epoch "), epoch);
	CHECK_INT(status_value(text, "svc\n", "  pid "), -1);
	free(text);

	metrics = t_http_get(e->metrics_port, "/metrics", &code);
	CHECK_INT(code, 200);
	snprintf(want, sizeof(want), "checksync_epoch{service=\"svc\",role=\"backup\"} %lld\n",
		 epoch);
	CHECK_CONTAINS(metrics, want);
	CHECK_CONTAINS(metrics, "# TYPE checksync_epochs_total counter\n");
	free(metrics);
}

static void test_restart(struct env *e, struct image *img)
{
	struct tc_run one = {ANON + 5 * 4096, 1, synth_pages};
	struct tclient *c;
	char *text;

	CHECK_INT(stop_daemon(e, SIGKILL), SIGKILL); /* kill -9: a wait status of 9 */
	CHECK(start_daemon(e)); /* else the scenario would check nothing, and say nothing */
	if (unit_failures)
		return;
	text = status_of(e);
	CHECK_INT(status_value(text, "svc\n", "  epoch "), 3);
	CHECK_INT(status_value(text, "svc\n", "  acked epoch "), 3);
	free(text);
	c = hello(e, "svc");
	if (c) {
		CHECK_INT(tc_send_epoch(c, img, 4, 3, &one, 1, UINT64_MAX), 0);
		expect(c, WIRE_ACK, 4, NULL, 10000, 50);
		tc_close(c);
	}
}

/*
 * Incarnations: a primary running another run of svc is refused, naming the
 * command; after accept-new-incarnation its full epoch replaces the image;
 * a fresh run over an image makes the backup take over at once (here the
 * synthetic image cannot be restored: it says so, and the image stays).
 */
static void test_incarnations(struct env *e, struct image *img)
{
	struct tc_run full = {ANON, 8, synth_pages};
	struct tclient *c = connect_as(e, e->primary);
	char *text;

	tc_incarnation = 0xa11e0;
	if (c) {
		CHECK_INT(tc_hello(c, "svc"), 0);
		expect(c, WIRE_ERROR, WIRE_ERR_INCARNATION_REFUSED,
		       "`checksync-backupd accept-new-incarnation svc` on the backup", 5000, 0);
		tc_close(c);
	}
	text = status_of(e);
	CHECK_INT(status_value(text, "svc\n", "  epoch "), 4);
	free(text);

	CHECK_INT(t_sh(t_path(e->tmp, "accept.out"), "'%s' accept-new-incarnation svc --config '%s'",
		       e->daemon, e->conf),
		  0);
	CHECK(t_wait_file_contains(t_path(e->tmp, "accept.out"), "will replace the image", 100));
	CHECK(log_contains(e, "an operator accepts a new incarnation", 5000));
	/* The acceptance outlives a restart of backupd, and says so. */
	CHECK_INT(stop_daemon(e, SIGTERM), 0);
	CHECK(start_daemon(e));
	CHECK(log_contains(e, "svc: an operator's accept-new-incarnation is still to be used", 5000));
	c = hello(e, "svc");
	if (c) {
		CHECK_INT(tc_send_epoch(c, img, 1, 0, &full, 1, UINT64_MAX), 0);
		expect(c, WIRE_ACK, 1, NULL, 10000, 50);
		tc_close(c);
	}
	CHECK(log_contains(e, "svc: the image now holds incarnation 00000000000a11e0", 5000));
	CHECK(log_contains(e, "svc: the operator's accept-new-incarnation is used", 5000));
	/* Used once, it is gone, a restart later too: yet another incarnation is refused. */
	CHECK_INT(stop_daemon(e, SIGTERM), 0);
	CHECK(start_daemon(e));
	tc_incarnation = 0xb0b;
	c = connect_as(e, e->primary);
	if (c) {
		CHECK_INT(tc_hello(c, "svc"), 0);
		expect(c, WIRE_ERROR, WIRE_ERR_INCARNATION_REFUSED, "accept-new-incarnation svc", 5000,
		       0);
		tc_close(c);
	}
	tc_incarnation = 0xa11e0;

	/* A fresh run (primaryd restarted) while we hold the image of 0xa11e0: take over now. */
	tc_incarnation = 0xf7e54;
	tc_hello_flags = WIRE_HELLO_FRESH;
	c = connect_as(e, e->primary);
	if (c) {
		CHECK_INT(tc_hello(c, "svc"), 0);
		expect(c, WIRE_ERROR, WIRE_ERR_OTHER, "backup could not restore epoch 1", 10000, 0);
		tc_close(c);
	}
	CHECK(log_contains(e, "svc: the primary restarted afresh", 100));
	CHECK(log_contains(e, "svc: takeover failed: epoch 1 could not be restored", 100));
	text = status_of(e);
	CHECK_INT(status_value(text, "svc\n", "  epoch "), 1); /* kept, not replaced */
	free(text);
	tc_incarnation = TC_INCARNATION;
	tc_hello_flags = 0;
}

/* "doomed" fails over fast: its fence hook runs, then /bin/true's fake hash fails the restore. */
static void test_failed_takeover(struct env *e, struct image *img)
{
	struct tc_run full = {ANON, 8, synth_pages};
	struct tclient *c = hello(e, "doomed");
	char *text;

	if (!c)
		return;
	CHECK_INT(tc_send_epoch(c, img, 1, 0, &full, 1, UINT64_MAX), 0);
	expect(c, WIRE_ACK, 1, NULL, 10000, 50);
	/* Silent now: the backup fences, then fails to restore, and closes us. */
	expect(c, WIRE_ERROR, WIRE_ERR_TAKEN_OVER, "taking over", 5000, 0);
	tc_close(c);
	CHECK(t_wait_file_contains(t_path(e->tmp, "fence.out"), "fenced doomed", 5000));
	CHECK(log_contains(e, "doomed: takeover failed: epoch 1 could not be restored", 5000));
	t_sleep_ms(700); /* and tries again: a second fence */
	CHECK(t_wait_file_contains(t_path(e->tmp, "fence.out"), "fenced doomed\nfenced doomed",
				   5000));
	CHECK(access(t_path(e->tmp, "takeover.out"), F_OK) < 0);
	text = status_of(e);
	CHECK(status_value(text, "doomed\n", "  pid ") == -1);
	free(text);
}

static int run_unit(const char *daemon)
{
	struct env e = {.daemon = daemon};
	char svc[1024];
	struct image *img;
	int r;

	r = setup(&e, "checksync-unit-backupd");
	if (r)
		return r;
	for (size_t i = 0; i < sizeof(synth_pages); i++)
		synth_pages[i] = i * 7;
	img = t_synth_image();
	write_service(&e, "svc",
		      "[service]\nexecutable = /bin/true\nprimary = primary.test\n"
		      "heartbeat_interval_ms = 50\n"
		      "failover_timeout_ms = 600000\nlease_ms = 500\n");
	snprintf(svc, sizeof(svc),
		 "[service]\nexecutable = /bin/true\nprimary = primary.test\n"
		 "heartbeat_interval_ms = 50\nfailover_timeout_ms = 300\nlease_ms = 100\n"
		 "fence_hook = /bin/sh -c \"echo fenced $CHECKSYNC_SERVICE >> %s\"\n"
		 "takeover_hook = /bin/sh -c \"echo took >> %s\"\n",
		 t_path(e.tmp, "fence.out"), t_path(e.tmp, "takeover.out"));
	write_service(&e, "doomed", svc);
	write_service(&e, "elsewhere",
		      "[service]\nexecutable = /bin/true\nprimary = other.test\n"
		      "failover_timeout_ms = 600000\nlease_ms = 500\n");

	test_bad_config(&e);
	CHECK(start_daemon(&e)); /* else nothing below runs, and nothing would say so */
	if (!unit_failures) {
		test_refusals(&e);
		test_epochs(&e, img);
		test_notify_and_fds(&e);
		test_status(&e, 3);
		test_restart(&e, img);
		test_failed_takeover(&e, img);
		test_incarnations(&e, img);
		CHECK_INT(stop_daemon(&e, SIGTERM), 0);
		CHECK(access(t_path(e.tmp, "status.sock"), F_OK) < 0);
	}
	image_free(img);
	teardown(&e);
	UNIT_EXIT();
}

/* ================= e2e ================= */

/* Keys written before the dump; CHECKSYNC_TEST_KEYS asks for more (a bigger heap, more PAGES). */
static int keys = 100;

struct kv {
	const char *bin;
	int port;
	pid_t pid;
	char instance[64];
	unsigned long long sig_ign; /* the original's SigIgn */
};

static bool kv_state(int port, char *instance, size_t len, int *items)
{
	int code = 0;
	char *body = t_http_get(port, "/state", &code), *p;
	bool ok = body && code == 200;

	if (ok && (p = strstr(body, "\"instance\":\"")))
		snprintf(instance, len, "%.16s", p + 12);
	if (ok && (p = strstr(body, "\"items\":")))
		*items = atoi(p + 8);
	free(body);
	return ok;
}

static bool kv_start(struct env *e, struct kv *kv)
{
	char addr[64];
	char *argv[] = {(char *)kv->bin, "-addr", addr, NULL};
	uint64_t deadline = t_now_ms() + 10000;
	int items = -1;

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", kv->port);
	kv->pid = t_spawn(argv, t_path(e->tmp, "kv.log"));
	while (t_now_ms() < deadline)
		if (kv_state(kv->port, kv->instance, sizeof(kv->instance), &items))
			break;
		else
			t_sleep_ms(50);
	if (items != 0)
		return false;
	for (int i = 0; i < keys; i++) {
		char path[256];
		int code = 0;

		/* Padded values, so that many keys make a heap of many PAGES messages. */
		snprintf(path, sizeof(path), "/set?k=k%d&v=v%d-%0120d", i, i * i, i);
		free(t_http_get(kv->port, path, &code));
		if (code != 200)
			return false;
	}
	return true;
}

/* The restored service answers as the original did: same instance, every key. */
static void check_restored(struct kv *kv, int ms)
{
	uint64_t deadline = t_now_ms() + ms;
	char instance[64] = "";
	int items = -1, code = 0;
	char *body;

	while (t_now_ms() < deadline && !kv_state(kv->port, instance, sizeof(instance), &items))
		t_sleep_ms(100);
	CHECK_STR(instance, kv->instance);
	CHECK_INT(items, keys);
	body = t_http_get(kv->port, "/get?k=k42", &code);
	CHECK_INT(code, 200);
	CHECK_CONTAINS(body, "\"v\":\"v1764-000");
	free(body);
}

static pid_t served_pid(struct env *e, const char *service)
{
	char *text = status_of(e);
	long long pid = status_value(text, service, "  pid ");

	free(text);
	return pid > 0 ? (pid_t)pid : -1;
}

/* Kill and wait until it is gone: reaped if it is our child, else until /proc says so. */
static void kill_pid(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	if (t_wait_exit(pid, 2000) != -1)
		return;
	for (int i = 0; i < 100 && kill(pid, 0) == 0; i++)
		t_sleep_ms(20);
}

/* Full epoch 1 of the real image, ACKed while we keep heartbeating. */
static struct tclient *send_image(struct env *e, struct image *img)
{
	struct tclient *c = hello(e, "kvserver");
	struct tc_run *runs;
	size_t n;

	if (!c)
		return NULL;
	runs = tc_image_runs(img, &n);
	CHECK_INT(tc_send_epoch(c, img, 1, 0, runs, n, UINT64_MAX), 0);
	expect(c, WIRE_ACK, 1, NULL, 30000, 50);
	free(runs);
	return c;
}

static void scenario_silence(struct env *e, struct kv *kv, struct image *img)
{
	const char *hook = t_path(e->tmp, "hook.out");
	struct tclient *c;
	char want[128];
	pid_t pid;

	CHECK(start_daemon(e)); /* else the scenario would check nothing, and say nothing */
	if (unit_failures)
		return;
	c = send_image(e, img);
	if (!c)
		return;
	kill_pid(kv->pid);
	/* Silent from here: the backup closes us to take over. */
	expect(c, WIRE_ERROR, WIRE_ERR_TAKEN_OVER, "backup is taking over", 10000, 0);
	tc_close(c);
	check_restored(kv, 10000);
	CHECK(log_contains(e, "took over service kvserver: restored pid", 5000));
	pid = served_pid(e, "kvserver");
	CHECK(pid > 0);
	/* Nothing of the daemon leaks into the service: its ignored signals are the original's. */
	CHECK_INT(proc_status_hex(pid, "SigIgn:"), kv->sig_ign);
	CHECK(all_cloexec(e->pid));
	CHECK(notified(e, "STATUS=serving kvserver as pid", 5000));
	snprintf(want, sizeof(want), "kvserver %d 1\n", pid);
	CHECK(t_wait_file_contains(hook, want, 5000));
	/* kill -9 and restart: still serving the same process, which runs on meanwhile. */
	CHECK_INT(stop_daemon(e, SIGKILL), SIGKILL);
	CHECK(start_daemon(e)); /* else the scenario would check nothing, and say nothing */
	if (unit_failures)
		return;
	CHECK_INT(served_pid(e, "kvserver"), pid);
	check_restored(kv, 5000);
	/* A primary that comes back is turned away. */
	c = connect_as(e, e->primary);
	if (c) {
		tc_hello(c, "kvserver");
		expect(c, WIRE_ERROR, WIRE_ERR_TAKEN_OVER, "backup has taken over", 5000, 0);
		tc_close(c);
	}
	CHECK_INT(stop_daemon(e, SIGTERM), 0);
	kill_pid(pid);
	unlink(t_path(e->tmp, "state/kvserver/serving"));
}

static void scenario_restart(struct env *e, struct kv *kv, struct image *img)
{
	const char *hook = t_path(e->tmp, "hook.out");
	struct tclient *c;
	struct tc_run *runs;
	char *text, want[128];
	uint8_t *garbage;
	size_t n;
	pid_t pid;

	t_rm_rf(t_path(e->tmp, "state"));
	unlink(hook);
	CHECK(start_daemon(e)); /* else the scenario would check nothing, and say nothing */
	if (unit_failures)
		return;
	c = send_image(e, img);
	if (!c)
		return;
	/* Epoch 2: every page of the image replaced by garbage, torn halfway. */
	runs = tc_image_runs(img, &n);
	garbage = malloc(img->pages_len);
	memset(garbage, 0xcc, img->pages_len);
	for (size_t i = 0; i < n; i++)
		runs[i].data = garbage + img->runs[i].offset;
	CHECK_INT(tc_send_epoch(c, img, 2, 1, runs, n, img->pages_len / PAGE_SIZE / 2), 0);
	free(garbage);
	free(runs);
	tc_close(c);
	CHECK(log_contains(e, "kvserver: torn epoch 2", 10000));
	CHECK_INT(stop_daemon(e, SIGKILL), SIGKILL);

	CHECK(start_daemon(e)); /* else the scenario would check nothing, and say nothing */
	if (unit_failures)
		return;
	text = status_of(e);
	CHECK_INT(status_value(text, "kvserver\n", "  epoch "), 1);
	CHECK_INT(status_value(text, "kvserver\n", "  acked epoch "), 1);
	free(text);
	/* Nothing heard since the restart: it takes over from what it read from disk. */
	check_restored(kv, 15000);
	pid = served_pid(e, "kvserver");
	CHECK(pid > 0);
	snprintf(want, sizeof(want), "kvserver %d 1\n", pid);
	CHECK(t_wait_file_contains(hook, want, 5000));
	CHECK_INT(stop_daemon(e, SIGTERM), 0);
	kill_pid(pid);
}

static int run_e2e(const char *daemon, const char *primaryd, const char *src)
{
	struct env e = {.daemon = daemon};
	struct kv kv = {0};
	struct image *img = NULL;
	char svc[1024], err[512];
	const char *build_log;
	int r;

	if (getenv("CHECKSYNC_TEST_KEYS"))
		keys = atoi(getenv("CHECKSYNC_TEST_KEYS"));
	if (geteuid() != 0 || system("command -v go >/dev/null") != 0) {
		printf("needs root and go: skipped\n");
		return 77;
	}
	r = setup(&e, "checksync-e2e-backupd");
	if (r)
		return r;
	build_log = t_path(e.tmp, "build.log");
	kv.bin = strdup(t_path(e.tmp, "kvserver"));
	kv.port = t_free_port();
	if (t_sh(build_log,
		 "cd '%s/tests/workloads/kvserver' && GO111MODULE=off GOPATH=/usr/share/gocode "
		 "go build -o '%s' .",
		 src, kv.bin) != 0) {
		fprintf(stderr, "building kvserver failed; see %s\n", build_log);
		return 1;
	}
	CHECK(kv_start(&e, &kv));
	kv.sig_ign = proc_status_hex(kv.pid, "SigIgn:");
	CHECK_INT(t_sh(t_path(e.tmp, "dump.log"), "'%s' dump --pid %d --image '%s'", primaryd,
		       kv.pid, t_path(e.tmp, "image")),
		  0);
	if (image_read(t_path(e.tmp, "image"), &img, err, sizeof(err)) < 0) {
		fprintf(stderr, "image_read: %s\n", err);
		kill_pid(kv.pid);
		return 1;
	}
	snprintf(svc, sizeof(svc),
		 "[service]\nexecutable = %s\nprimary = primary.test\nheartbeat_interval_ms = 50\n"
		 "failover_timeout_ms = 1000\nlease_ms = 500\n"
		 "takeover_hook = /bin/sh -c \"echo $CHECKSYNC_SERVICE $CHECKSYNC_PID "
		 "$CHECKSYNC_EPOCH >> %s\"\n",
		 kv.bin, t_path(e.tmp, "hook.out"));
	write_service(&e, "kvserver", svc);

	scenario_silence(&e, &kv, img);
	scenario_restart(&e, &kv, img);

	kill_pid(kv.pid);
	image_free(img);
	free((char *)kv.bin);
	teardown(&e);
	UNIT_EXIT();
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	log_set_program("test_backupd");
	if (argc == 3 && strcmp(argv[1], "unit") == 0)
		return run_unit(argv[2]);
	if (argc == 5 && strcmp(argv[1], "e2e") == 0)
		return run_e2e(argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: test_backupd unit DAEMON | e2e DAEMON PRIMARYD SRCDIR\n");
	return 2;
}
