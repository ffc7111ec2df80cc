/*
 * test_primaryd.c - checksync-primaryd as a running daemon, driven by a
 * fake backup: a real mutual-TLS server in this test (the certificates and
 * the blocking wire client of backupd/tests/tclient.c, on the accepting
 * side), speaking the wire module's encoding.
 *
 *   test_primaryd DAEMON
 *
 * The guarded service is /bin/sleep (no DWARF: whole-mapping capture, which
 * is all the link needs). Checked, as the conversation goes:
 *   - HELLO before data: the first message is the primary's HELLO, and
 *     nothing follows until our HELLO says we accepted it;
 *   - epochs: epoch 1 is full (base 0) and its COMMIT verifies against the
 *     epoch hash of what came; after our ACK, epoch 2 follows on base 1;
 *     status then says acked 2 and protected 1; heartbeats flow;
 *   - the lease: when we go silent for longer than lease_ms the service is
 *     stopped (State t/T) and status says frozen; one heartbeat and it runs;
 *   - reconnect: when we close the connection the daemon connects again,
 *     says HELLO again and starts over with a full epoch;
 *   - orderly shutdown: SIGTERM hands the service over (final epoch, our
 *     ACK, HANDOVER, our TAKEN_OVER) and then ends it with status 0 within
 *     3 s, the service and the lease keeper with it, the status socket
 *     removed, everything freed (ASan/LSan: see the note).
 * Root or not does not matter (it traces its own child); about 10 s.
 */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../../backupd/tests/tclient.h"
#include "config.h"
#include "delta.h"
#include "tls.h"
#include "unit.h"
#include "util.h"

#define LEASE_MS 400

struct env {
	const char *tmp, *daemon, *conf, *log;
	int port, lfd;
	SSL_CTX *server;
	pid_t pid;
};

static void write_conf(struct env *e)
{
	char text[4096];

	snprintf(text, sizeof(text),
		 "[daemon]\nstate_dir = %s\nservices_dir = %s\nstatus_socket = %s\n"
		 "[tls]\nca = %s\ncert = %s\nkey = %s\n",
		 e->tmp, t_path(e->tmp, "services"), t_path(e->tmp, "status.sock"),
		 t_path(e->tmp, "ca.crt"), t_path(e->tmp, "primary.crt"),
		 t_path(e->tmp, "primary.key"));
	e->conf = strdup(t_path(e->tmp, "primary.conf"));
	t_write_file(e->conf, text);
	mkdir(t_path(e->tmp, "services"), 0755);
	/*
	 * failover_timeout_ms well above the lease test's silence and the looks
	 * that follow it: the primary drops a link silent that long, and the
	 * test must see the lease freeze and thaw on one link, even when a
	 * loaded machine stretches the silence past a second.
	 */
	snprintf(text, sizeof(text),
		 "[service]\nname = s\ncommand = /bin/sleep 600\nexecutable = /bin/sleep\n"
		 "backup = 127.0.0.1:%d\nprimary = primary.test\nbackup_name = backup.test\n"
		 "epoch_interval_ms = 100\ndelta_cache_mb = 0\n"
		 "heartbeat_interval_ms = 50\nlease_ms = %d\nfailover_timeout_ms = 3000\n",
		 e->port, LEASE_MS);
	t_write_file(t_path(e->tmp, "services/s.conf"), text);
}

static int listen_on(int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 4) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The fake backup: accept within ms and finish the TLS handshake; NULL if nothing came. */
static struct tclient *accept_primary(struct env *e, int ms)
{
	struct pollfd p = {.fd = e->lfd, .events = POLLIN};

	if (poll(&p, 1, ms) != 1)
		return NULL;
	struct tclient *c = calloc(1, sizeof(*c));
	c->fd = accept4(e->lfd, NULL, NULL, SOCK_CLOEXEC);
	c->ssl = SSL_new(e->server);
	c->dec = wire_decoder_new();
	SSL_set_fd(c->ssl, c->fd);
	if (c->fd < 0 || SSL_accept(c->ssl) != 1) {
		fprintf(stderr, "TLS accept failed\n");
		tc_close(c);
		return NULL;
	}
	return c;
}

static int send_hello(struct tclient *c)
{
	struct wire_msg m = {.type = WIRE_HELLO,
			     .hello = {.proto_version = WIRE_PROTO_VERSION,
				       .role = ROLE_BACKUP,
				       .service = "s",
				       .boot_id = "test",
				       .pid = getpid()}};
	return tc_send(c, &m);
}

/* A backup's heartbeat: it echoes the primary's newest stamp, which renews its lease (wire.h). */
static int send_heartbeat(struct tclient *c)
{
	struct wire_msg m = {.type = WIRE_HEARTBEAT,
			     .heartbeat = {.seq = ++c->hb_seq,
					   .time_us = now_us(),
					   .echo_us = c->peer_time_us,
					   .echo_age_us = c->peer_time_us ? now_us() - c->peer_at_us : 0}};
	return tc_send(c, &m);
}

static int send_ack(struct tclient *c, uint64_t epoch)
{
	struct wire_msg m = {.type = WIRE_ACK, .ack = {.epoch = epoch}};
	return tc_send(c, &m);
}

/*
 * Read one epoch: EPOCH_BEGIN (its epoch and base out), the rest, COMMIT;
 * 0 if the COMMIT verifies against the hash of what came, else -1.
 */
/*
 * A DELTA message of an epoch without deltas (the test's delta_cache_mb = 0):
 * no record needs a base (whole pages, or runs on zeros), so the fake backup can hash the epoch as the
 * real one rebuilds it without holding an image.
 */
static int hash_whole_pages(struct wire_epoch_hash *h, const struct wire_delta *d, uint64_t *pages)
{
	uint8_t page[WIRE_PAGE_SIZE];
	struct delta_rec rec;
	size_t pos = 0;
	int r;

	while ((r = delta_payload_next(d->raw, d->raw_len, &pos, &rec)) == 1) {
		if (delta_needs_base(rec.kind)) {
			fprintf(stderr, "a delta record of kind %d with delta_cache_mb = 0\n", rec.kind);
			return -EPROTO;
		}
		if (delta_apply(rec.kind, rec.body, rec.len, page) < 0)
			return -EBADMSG;
		wire_epoch_hash_add_page(h, rec.addr, page);
		(*pages)++;
	}
	return r;
}

static int read_epoch(struct tclient *c, uint64_t *epoch, uint64_t *base, uint64_t *pages)
{
	struct wire_epoch_hash h;
	struct wire_msg m;
	char err[256];
	int r = -1;

	*pages = 0;
	if (tc_recv(c, &m, 3000, 0) != 1 || m.type != WIRE_EPOCH_BEGIN) {
		fprintf(stderr, "expected EPOCH_BEGIN: %s\n", c->err);
		return -1;
	}
	*epoch = m.epoch_begin.epoch;
	*base = m.epoch_begin.base_epoch;
	wire_epoch_hash_init(&h);
	wire_epoch_hash_add(&h, &m);
	while (tc_recv(c, &m, 3000, 0) == 1) {
		if (m.type == WIRE_COMMIT) {
			r = wire_epoch_hash_verify(&h, &m.commit, err, sizeof(err));
			if (r < 0)
				fprintf(stderr, "epoch %lu: %s\n", (unsigned long)*epoch, err);
			break;
		}
		if (m.type == WIRE_PAGES)
			*pages += m.pages.npages;
		if (m.type == WIRE_DELTA) {
			r = hash_whole_pages(&h, &m.delta, pages);
			if (r < 0)
				break;
			continue;
		}
		wire_epoch_hash_add(&h, &m);
	}
	wire_epoch_hash_done(&h);
	return r;
}

/* `checksync-primaryd status`: its output (malloc'd). */
static char *status_of(struct env *e)
{
	const char *out = t_path(e->tmp, "status.out");

	unlink(out);
	t_sh(out, "'%s' status --config '%s'", e->daemon, e->conf);
	return t_read_file(out);
}

/* The number on the status line "  NAME   VALUE", or -1. */
static long long status_value(struct env *e, const char *name)
{
	_cleanup_free_ char *text = status_of(e);
	char needle[64];
	snprintf(needle, sizeof(needle), "\n  %s ", name);
	const char *p = text ? strstr(text, needle) : NULL;
	return p ? strtoll(p + strlen(needle) + strspn(p + strlen(needle), " "), NULL, 10) : -1;
}

static bool status_says(struct env *e, const char *needle, int ms)
{
	uint64_t deadline = t_now_ms() + ms;
	do {
		_cleanup_free_ char *text = status_of(e);
		if (text && strstr(text, needle))
			return true;
		t_sleep_ms(20);
	} while (t_now_ms() < deadline);
	return false;
}

/* The State: letter of /proc/PID/status, or 0. */
static char proc_state(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	_cleanup_free_ char *text = t_read_file(path);
	const char *p = text ? strstr(text, "State:\t") : NULL;
	return p ? p[7] : 0;
}

static bool wait_state(pid_t pid, const char *letters, int ms)
{
	uint64_t deadline = t_now_ms() + ms;
	do {
		char s = proc_state(pid);
		if (s && strchr(letters, s))
			return true;
		t_sleep_ms(10);
	} while (t_now_ms() < deadline);
	return false;
}

/* Keep the conversation going (heartbeats both ways, each epoch ACKed) for ms. */
static void converse(struct tclient *c, int ms)
{
	uint64_t deadline = t_now_ms() + ms, next_hb = 0;
	struct wire_msg m;
	while (t_now_ms() < deadline) {
		if (t_now_ms() >= next_hb) {
			send_heartbeat(c);
			next_hb = t_now_ms() + 50;
		}
		if (tc_recv(c, &m, 20, 0) == 1 && m.type == WIRE_COMMIT)
			send_ack(c, m.commit.epoch);
	}
}

/*
 * Heartbeats until the service runs again and the role says primary, looking
 * between them: a look without heartbeats is itself a silence, and on a
 * loaded machine a thaw that came after one fixed conversation would then
 * race the next freeze.
 */
static bool converse_until_thawed(struct env *e, struct tclient *c, pid_t svc, int ms)
{
	uint64_t deadline = t_now_ms() + ms;
	do {
		converse(c, 100);
		if (wait_state(svc, "SR", 0) && status_says(e, "role                     primary", 0))
			return true;
	} while (t_now_ms() < deadline);
	return false;
}

static void test_hello_and_epochs(struct env *e, struct tclient *c)
{
	struct wire_msg m;
	uint64_t epoch, base, pages;

	CHECK_INT(tc_recv(c, &m, 3000, 0), 1);
	CHECK_INT(m.type, WIRE_HELLO);
	CHECK_INT(m.hello.role, ROLE_PRIMARY);
	CHECK_STR(m.hello.service, "s");
	/* Nothing but HELLO until we accept it: no epoch, no heartbeat. */
	CHECK_INT(tc_recv(c, &m, 400, 0), 0);
	CHECK_INT(c->heartbeats_seen, 0);
	CHECK_INT(status_value(e, "protected"), 0); /* nothing acknowledged yet */

	CHECK_INT(send_hello(c), 0);
	CHECK_INT(read_epoch(c, &epoch, &base, &pages), 0);
	CHECK_INT(epoch, 1);
	CHECK_INT(base, 0);
	CHECK(pages > 0);
	CHECK_INT(send_ack(c, 1), 0);
	CHECK_INT(read_epoch(c, &epoch, &base, &pages), 0);
	CHECK_INT(epoch, 2);
	CHECK_INT(base, 1);
	CHECK_INT(send_ack(c, 2), 0);
	converse(c, 300);
	CHECK(status_value(e, "acked epoch") >= 2);
	CHECK_INT(status_value(e, "protected"), 1);
	CHECK(c->heartbeats_seen > 0);
}

static void test_lease(struct env *e, struct tclient *c, pid_t svc)
{
	struct wire_msg m;
	uint64_t t0 = t_now_ms();

	CHECK(wait_state(svc, "SR", 500)); /* running (between epochs, which stop it briefly) */
	/* Silent: read (and ACK nothing), send no heartbeat, for longer than the lease. */
	while (t_now_ms() - t0 < LEASE_MS + 300)
		tc_recv(c, &m, 20, 0);
	CHECK(wait_state(svc, "tT", 200));
	CHECK(status_says(e, "role                     frozen", 500));
	CHECK_INT(status_value(e, "protected"), 0);
	/*
	 * Heartbeats again and it runs: not on the first (after a silence that
	 * froze it, what comes first may be old; guard.c waits two heartbeat
	 * intervals), and the keeper lets go at the next lease tick.
	 */
	CHECK(converse_until_thawed(e, c, svc, 3000));
}

static void test_reconnect(struct env *e, struct tclient **cp)
{
	struct wire_msg m;
	uint64_t epoch, base, pages;

	tc_close(*cp);
	*cp = accept_primary(e, 3000);
	CHECK(*cp != NULL);
	if (!*cp)
		return;
	CHECK_INT(tc_recv(*cp, &m, 3000, 0), 1);
	CHECK_INT(m.type, WIRE_HELLO);
	CHECK_INT(send_hello(*cp), 0);
	/* A new connection starts over: a full epoch. */
	CHECK_INT(read_epoch(*cp, &epoch, &base, &pages), 0);
	CHECK_INT(base, 0);
	CHECK(pages > 0);
	CHECK_INT(send_ack(*cp, epoch), 0);
	converse(*cp, 200);
}

/* Is a lease keeper of the daemon (its child named cs-lease-keeper) running? */
static bool keeper_running(pid_t daemon)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	char want[32], path[300];
	bool found = false;

	snprintf(want, sizeof(want), "PPid:\t%d\n", daemon);
	while (d && (de = readdir(d)) && !found) {
		snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
		_cleanup_free_ char *comm = t_read_file(path);
		if (!comm || strncmp(comm, "cs-lease-keeper", 15) != 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
		_cleanup_free_ char *st = t_read_file(path);
		found = st && strstr(st, want);
	}
	if (d)
		closedir(d);
	return found;
}

static void test_shutdown(struct env *e, struct tclient *c, pid_t svc)
{
	struct wire_msg m;

	pid_t daemon = e->pid;
	bool handover = false;
	CHECK(keeper_running(daemon));
	/* SIGTERM is a planned handover (failover.h): ACK its final epoch, take it over. */
	kill(e->pid, SIGTERM);
	uint64_t deadline = t_now_ms() + 3000;
	while (!handover && t_now_ms() < deadline && tc_recv(c, &m, 100, 0) >= 0) {
		if (m.type == WIRE_COMMIT)
			send_ack(c, m.commit.epoch);
		if (m.type == WIRE_HANDOVER) {
			struct wire_msg err = {.type = WIRE_ERROR,
					       .error = {.code = WIRE_ERR_TAKEN_OVER,
							 .reason = "backup has taken over"}};
			handover = tc_send(c, &err) == 0;
		}
		m.type = WIRE_HEARTBEAT;
	}
	CHECK(handover);
	int st = t_wait_exit(e->pid, 3000);
	CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (st == -1) {
		kill(e->pid, SIGKILL);
		t_wait_exit(e->pid, 3000);
	}
	e->pid = 0;
	CHECK(kill(svc, 0) < 0); /* the service stopped with it */
	CHECK(!keeper_running(daemon));
	CHECK(access(t_path(e->tmp, "status.sock"), F_OK) < 0);
	int got;
	while ((got = tc_recv(c, &m, 1000, 0)) == 1)
		; /* what was on its way */
	CHECK_INT(got, -1); /* then the connection closed */
	CHECK(t_wait_file_contains(e->log, "every service is handed over", 100));
}

int main(int argc, char **argv)
{
	struct env e = {0};
	char err[512];

	if (argc != 2) {
		fprintf(stderr, "usage: test_primaryd DAEMON\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	e.daemon = argv[1];
	e.tmp = t_tmpdir("cs-primaryd-test");
	int r = e.tmp ? t_make_certs(e.tmp) : 1;
	if (r)
		return r;
	e.port = t_free_port();
	e.lfd = listen_on(e.port);
	e.server = tls_server_ctx(t_path(e.tmp, "ca.crt"), t_path(e.tmp, "backup.crt"),
				  t_path(e.tmp, "backup.key"), err, sizeof(err));
	if (e.lfd < 0 || !e.server) {
		fprintf(stderr, "cannot be the backup: %s\n", e.server ? strerror(errno) : err);
		return 1;
	}
	write_conf(&e);
	e.log = strdup(t_path(e.tmp, "primaryd.log"));
	char *av[] = {(char *)e.daemon, "--config", (char *)e.conf, NULL};
	e.pid = t_spawn(av, e.log);

	struct tclient *c = accept_primary(&e, 5000);
	CHECK(c != NULL);
	if (c) {
		test_hello_and_epochs(&e, c);
		pid_t svc = (pid_t)status_value(&e, "pid");
		CHECK(svc > 0);
		test_lease(&e, c, svc);
		test_reconnect(&e, &c);
		if (c)
			test_shutdown(&e, c, svc);
	}
	if (e.pid > 0) {
		kill(e.pid, SIGKILL);
		t_wait_exit(e.pid, 3000);
	}
	tc_close(c);
	SSL_CTX_free(e.server);
	if (unit_failures)
		fprintf(stderr, "kept %s; the daemon's log is %s\n", e.tmp, e.log);
	else
		t_rm_rf(e.tmp);
	free((char *)e.conf);
	free((char *)e.log);
	UNIT_EXIT();
}
