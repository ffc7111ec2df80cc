/*
 * test_tls.c - mutual TLS 1.3 over real sockets on 127.0.0.1.
 *
 * Certificates are made with the openssl command into a temporary
 * directory: our CA, another CA, a server and a client certificate from
 * ours, a client certificate from the other CA, and a self-signed one. Each
 * case starts a listener, connects, and tries a HELLO round trip (the wire
 * module's messages). The right certificate must get through; no
 * certificate, a self-signed one, or one from another CA must be refused
 * during the handshake, before the server has been handed a single byte of
 * application data.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <ftw.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>

#include "tls.h"
#include "unit.h"
#include "util.h"
#include "wire.h"

static char tmpdir[] = "/tmp/checksync-unit-tls-XXXXXX";

/* ---------- certificates ---------- */

static const char openssl_cnf[] = "[req]\n"
				  "distinguished_name = dn\n"
				  "[dn]\n"
				  "[v3_ca]\n"
				  "basicConstraints = critical, CA:TRUE\n"
				  "keyUsage = critical, keyCertSign, cRLSign\n"
				  "subjectKeyIdentifier = hash\n"
				  "[v3_leaf]\n"
				  "basicConstraints = critical, CA:FALSE\n"
				  "keyUsage = critical, digitalSignature\n"
				  "extendedKeyUsage = serverAuth, clientAuth\n"
				  "subjectAltName = DNS:${ENV::CN}, IP:127.0.0.1\n"
				  "subjectKeyIdentifier = hash\n"
				  "[v3_srv]\n"
				  "basicConstraints = critical, CA:FALSE\n"
				  "extendedKeyUsage = serverAuth\n"
				  "subjectAltName = DNS:${ENV::CN}, IP:127.0.0.1\n"
				  "[v3_cli]\n"
				  "basicConstraints = critical, CA:FALSE\n"
				  "extendedKeyUsage = clientAuth\n"
				  "subjectAltName = DNS:${ENV::CN}\n"
				  "[v3_noeku]\n"
				  "basicConstraints = critical, CA:FALSE\n"
				  "subjectAltName = DNS:${ENV::CN}\n"
				  "[v3_cn_only]\n"
				  "basicConstraints = critical, CA:FALSE\n"
				  "extendedKeyUsage = clientAuth\n";

static const char gen_sh[] =
    "set -e\n"
    "key() { \"$OPENSSL\" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1.key\"; "
    "}\n"
    "ca() { key \"$1\"; CN=x \"$OPENSSL\" req -new -x509 -config cnf -extensions v3_ca "
    "-key \"$1.key\" -subj \"/CN=$2\" -days 2 -out \"$1.crt\"; }\n"
    "leaf() { key \"$1\"; CN=$2 \"$OPENSSL\" req -new -config cnf -key \"$1.key\" "
    "-subj \"/CN=$2\" -out \"$1.csr\"; CN=$2 \"$OPENSSL\" x509 -req -in \"$1.csr\" "
    "-CA \"$3.crt\" -CAkey \"$3.key\" -CAcreateserial -days 2 -extfile cnf "
    "-extensions \"${4:-v3_leaf}\" -out \"$1.crt\"; }\n"
    "ca ca 'CheckSync test CA'\n"
    "ca ca2 'Another CA'\n"
    "leaf server backup.test ca\n"
    "leaf client primary.test ca\n"
    "leaf other primary.test ca2\n"
    "leaf intruder intruder.test ca\n"
    "leaf cli_noeku primary.test ca v3_noeku\n"
    "leaf cli_srvonly primary.test ca v3_srv\n"
    "leaf cli_cn primary.test ca v3_cn_only\n"
    "leaf cli_cn_other intruder.test ca v3_cn_only\n"
    "leaf srv_clionly backup.test ca v3_cli\n"
    "key self\n"
    "CN=primary.test \"$OPENSSL\" req -new -x509 -config cnf -extensions v3_leaf "
    "-key self.key -subj /CN=primary.test -days 2 -out self.crt\n";

static const char *in_tmp(const char *name)
{
	static char bufs[8][4200];
	static int next;
	char *p = bufs[next++ % 8];

	snprintf(p, sizeof(bufs[0]), "%s/%s", tmpdir, name);
	return p;
}

static int write_text(const char *name, const char *text)
{
	FILE *f = fopen(in_tmp(name), "w");

	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -errno;
}

/* 0, or 77 (skip) without an openssl command, or 1 if it failed. */
static int make_certificates(void)
{
	const char *openssl = getenv("OPENSSL");
	char cmd[9000];

	if (!openssl || !*openssl)
		openssl = "openssl";
	if (write_text("cnf", openssl_cnf) < 0 || write_text("gen.sh", gen_sh) < 0)
		return 1;
	snprintf(cmd, sizeof(cmd), "command -v '%s' >/dev/null", openssl);
	if (system(cmd) != 0) {
		printf("no openssl command: skipped\n");
		return 77;
	}
	snprintf(cmd, sizeof(cmd), "cd '%s' && OPENSSL='%s' sh gen.sh >gen.log 2>&1", tmpdir,
		 openssl);
	if (system(cmd) != 0) {
		fprintf(stderr, "making certificates failed; see %s\n", in_tmp("gen.log"));
		return 1;
	}
	return 0;
}

/* ---------- one connection ---------- */

struct tls_case {
	const char *name;
	SSL_CTX *client_ctx;
	const char *peer_name; /* what the client expects the server to be */
	bool expect_ok;
	const char *srv_reason; /* the server's failure must say this (NULL: no check) */
	const char *cli_reason; /* and the client's, or its close after connecting */
	bool no_server;		/* connect to a port nobody listens on */
};

struct result {
	struct event_base *base;
	struct wire_decoder *srv_dec, *cli_dec;
	struct bufferevent *srv_bev, *cli_bev;
	bool expect_server;

	int srv_established, srv_failed;
	size_t srv_bytes; /* application bytes the server was handed */
	char srv_reason[512], srv_peer[TLS_PEER_MAX], srv_cn[128];

	int cli_established, cli_failed, cli_closed;
	bool cli_got_hello;
	char cli_reason[512], cli_cn[128], hello_service[WIRE_MAX_NAME + 1];
};

static void maybe_done(struct result *r)
{
	bool cli_over = r->cli_got_hello || r->cli_failed || r->cli_closed;
	bool srv_over = !r->expect_server || r->srv_failed || r->srv_established;

	if (cli_over && srv_over)
		event_base_loopexit(r->base, NULL);
}

static void send_hello(struct bufferevent *bev, uint32_t role)
{
	struct wire_hello h = {.proto_version = WIRE_PROTO_VERSION,
			       .role = role,
			       .service = "kvserver",
			       .boot_id = "boot",
			       .pid = getpid()};
	msgpack_sbuffer sb;

	msgpack_sbuffer_init(&sb);
	CHECK_INT(wire_pack_hello(&sb, &h), 0);
	bufferevent_write(bev, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* Move everything in bev's input into dec; returns the bytes moved. */
static size_t drain_into(struct bufferevent *bev, struct wire_decoder *dec)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	if (n) {
		wire_decoder_feed(dec, evbuffer_pullup(in, n), n);
		evbuffer_drain(in, n);
	}
	return n;
}

static void srv_read(struct bufferevent *bev, void *arg)
{
	struct result *r = arg;
	struct wire_msg m;
	char err[256];

	r->srv_bytes += drain_into(bev, r->srv_dec);
	while (wire_decoder_next(r->srv_dec, &m, err, sizeof(err)) == 1)
		if (m.type == WIRE_HELLO)
			send_hello(bev, 1);
}

static void srv_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev, (void)what, (void)arg;
}

static void srv_established(struct bufferevent *bev, const char *peer, void *arg)
{
	struct result *r = arg;

	r->srv_established++;
	r->srv_bev = bev;
	snprintf(r->srv_peer, sizeof(r->srv_peer), "%s", peer);
	tls_bev_peer_cn(bev, r->srv_cn, sizeof(r->srv_cn));
	bufferevent_setcb(bev, srv_read, NULL, srv_event, r);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	srv_read(bev, r); /* bytes that came with the handshake's last flight */
	maybe_done(r);
}

static void srv_failed(const char *peer, const char *reason, void *arg)
{
	struct result *r = arg;

	r->srv_failed++;
	snprintf(r->srv_peer, sizeof(r->srv_peer), "%s", peer);
	snprintf(r->srv_reason, sizeof(r->srv_reason), "%s", reason);
	maybe_done(r);
}

static void cli_read(struct bufferevent *bev, void *arg)
{
	struct result *r = arg;
	struct wire_msg m;
	char err[256];

	drain_into(bev, r->cli_dec);
	while (wire_decoder_next(r->cli_dec, &m, err, sizeof(err)) == 1)
		if (m.type == WIRE_HELLO && m.hello.role == 1) {
			r->cli_got_hello = true;
			snprintf(r->hello_service, sizeof(r->hello_service), "%s", m.hello.service);
		}
	maybe_done(r);
}

/* After its handshake, a TLS 1.3 client learns of the server's refusal as an alert. */
static void cli_event(struct bufferevent *bev, short what, void *arg)
{
	struct result *r = arg;

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	tls_describe_event(bev, what, r->cli_reason, sizeof(r->cli_reason));
	r->cli_closed++;
	maybe_done(r);
}

static void cli_established(struct bufferevent *bev, const char *peer, void *arg)
{
	struct result *r = arg;

	(void)peer;
	r->cli_established++;
	r->cli_bev = bev;
	tls_bev_peer_cn(bev, r->cli_cn, sizeof(r->cli_cn));
	bufferevent_setcb(bev, cli_read, NULL, cli_event, r);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	send_hello(bev, 0);
}

static void cli_failed(const char *peer, const char *reason, void *arg)
{
	struct result *r = arg;

	(void)peer;
	r->cli_failed++;
	snprintf(r->cli_reason, sizeof(r->cli_reason), "%s", reason);
	maybe_done(r);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	event_base_loopexit(arg, NULL);
}

/* A port on 127.0.0.1 that nothing listens on (just now). */
static int closed_port(struct event_base *base, SSL_CTX *sctx)
{
	struct tls_callbacks cbs = {srv_established, srv_failed, NULL};
	struct tls_listener *l;
	char err[256];
	int port;

	if (tls_listen(base, sctx, "127.0.0.1:0", &cbs, &l, err, sizeof(err)) < 0)
		return -1;
	port = tls_listener_port(l);
	tls_listener_free(l);
	return port;
}

static void run(SSL_CTX *sctx, const struct tls_case *c, struct result *r)
{
	struct tls_callbacks scbs = {srv_established, srv_failed, r};
	struct tls_callbacks ccbs = {cli_established, cli_failed, r};
	struct timeval tv = {.tv_sec = 5};
	struct tls_listener *l = NULL;
	struct event *timer;
	char addr[64], err[512];
	int port;

	*r = (struct result){.base = event_base_new(),
			     .srv_dec = wire_decoder_new(),
			     .cli_dec = wire_decoder_new(),
			     .expect_server = !c->no_server};
	if (c->no_server) {
		port = closed_port(r->base, sctx);
	} else {
		CHECK_INT(tls_listen(r->base, sctx, "127.0.0.1:0", &scbs, &l, err, sizeof(err)), 0);
		port = l ? tls_listener_port(l) : -1;
	}
	CHECK(port > 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	CHECK_INT(
	    tls_connect(r->base, c->client_ctx, addr, c->peer_name, &ccbs, NULL, err, sizeof(err)),
	    0);
	timer = evtimer_new(r->base, on_timeout, r->base);
	evtimer_add(timer, &tv);
	event_base_dispatch(r->base);
	event_free(timer);
	if (r->srv_bev)
		bufferevent_free(r->srv_bev);
	if (r->cli_bev)
		bufferevent_free(r->cli_bev);
	tls_listener_free(l);
	wire_decoder_free(r->srv_dec);
	wire_decoder_free(r->cli_dec);
	event_base_free(r->base);
}

static void check_case(SSL_CTX *sctx, const struct tls_case *c)
{
	struct result r;
	int before = unit_failures;

	run(sctx, c, &r);
	printf("%-34s server: %s%s  client: %s%s\n", c->name,
	       r.srv_established ? "accepted "
	       : r.srv_failed	 ? "refused: "
				 : "-",
	       r.srv_established ? r.srv_cn : r.srv_reason,
	       r.cli_got_hello ? "HELLO round trip with "
	       : r.cli_failed  ? "failed: "
	       : r.cli_closed  ? "connected, then closed: "
			       : "-",
	       r.cli_got_hello ? r.cli_cn : r.cli_reason);
	if (c->expect_ok) {
		CHECK_INT(r.srv_established, 1);
		CHECK_INT(r.srv_failed, 0);
		CHECK(r.cli_got_hello);
		CHECK_STR(r.srv_cn, "primary.test");
		CHECK_STR(r.cli_cn, "backup.test");
		CHECK_STR(r.hello_service, "kvserver");
	} else {
		/* Refused in the handshake: the server's side never got a connection. */
		CHECK_INT(r.srv_established, 0);
		CHECK_INT(r.srv_bytes, 0);
		CHECK(!r.cli_got_hello);
		CHECK(r.cli_failed || r.cli_closed);
		if (!c->no_server)
			CHECK_INT(r.srv_failed, 1);
	}
	if (c->srv_reason)
		CHECK_CONTAINS(r.srv_reason, c->srv_reason);
	if (c->cli_reason)
		CHECK_CONTAINS(r.cli_reason, c->cli_reason);
	if (!c->no_server && (r.srv_failed || r.srv_established))
		CHECK(strncmp(r.srv_peer, "127.0.0.1:", 10) == 0);
	if (unit_failures != before)
		fprintf(stderr, "  ^ in case '%s'\n", c->name);
}

/* ---------- contexts ---------- */

static SSL_CTX *client(const char *ca, const char *name)
{
	char crt[64], key[64], err[512];
	SSL_CTX *ctx;

	snprintf(crt, sizeof(crt), "%s.crt", name);
	snprintf(key, sizeof(key), "%s.key", name);
	ctx = tls_client_ctx(in_tmp(ca), in_tmp(crt), in_tmp(key), err, sizeof(err));
	if (!ctx)
		fprintf(stderr, "client context %s: %s\n", name, err);
	return ctx;
}

/* What a peer without a certificate, or stuck at TLS 1.2, would bring. */
static SSL_CTX *odd_client_cert(const char *name, int max_version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	SSL_CTX_set_max_proto_version(ctx, max_version);
	SSL_CTX_load_verify_locations(ctx, in_tmp("ca.crt"), NULL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (name) {
		char crt[64], key[64];

		snprintf(crt, sizeof(crt), "%s.crt", name);
		snprintf(key, sizeof(key), "%s.key", name);
		SSL_CTX_use_certificate_chain_file(ctx, in_tmp(crt));
		SSL_CTX_use_PrivateKey_file(ctx, in_tmp(key), SSL_FILETYPE_PEM);
	}
	return ctx;
}

static SSL_CTX *odd_client(bool with_cert, int max_version)
{
	return odd_client_cert(with_cert ? "client" : NULL, max_version);
}

static void test_context_errors(void)
{
	char err[512] = "";

	CHECK(!tls_server_ctx(in_tmp("ca.crt"), in_tmp("missing.crt"), in_tmp("server.key"), err,
			      sizeof(err)));
	CHECK_CONTAINS(err, "certificate ");
	CHECK_CONTAINS(err, "missing.crt: ");
	CHECK(!tls_server_ctx(in_tmp("ca.crt"), in_tmp("server.crt"), in_tmp("client.key"), err,
			      sizeof(err)));
	CHECK_CONTAINS(err, "client.key");
	CHECK(!tls_client_ctx(in_tmp("cnf"), in_tmp("client.crt"), in_tmp("client.key"), err,
			      sizeof(err)));
	CHECK_CONTAINS(err, "CA file ");
	/* Our own certificate must be fit for our side of the connection. */
	CHECK(!tls_client_ctx(in_tmp("ca.crt"), in_tmp("cli_srvonly.crt"), in_tmp("cli_srvonly.key"),
			      err, sizeof(err)));
	CHECK_CONTAINS(err, "cli_srvonly.crt: its extendedKeyUsage lacks clientAuth");
	CHECK(!tls_client_ctx(in_tmp("ca.crt"), in_tmp("cli_noeku.crt"), in_tmp("cli_noeku.key"),
			      err, sizeof(err)));
	CHECK_CONTAINS(err, "cli_noeku.crt: it has no extendedKeyUsage (clientAuth is required)");
	CHECK(!tls_server_ctx(in_tmp("ca.crt"), in_tmp("srv_clionly.crt"), in_tmp("srv_clionly.key"),
			      err, sizeof(err)));
	CHECK_CONTAINS(err, "srv_clionly.crt: its extendedKeyUsage lacks serverAuth");
}

/*
 * Names and extended key usage of the peer. sctx expects primary.test (as
 * backupd's does, from the service files' primary =).
 */
static void test_identity(SSL_CTX *sctx)
{
	SSL_CTX *good = client("ca.crt", "client"), *intruder = client("ca.crt", "intruder"),
		*noeku = odd_client_cert("cli_noeku", 0), *srvonly = odd_client_cert("cli_srvonly", 0),
		*cn = client("ca.crt", "cli_cn"), *cn_other = client("ca.crt", "cli_cn_other"),
		*bad_srv = SSL_CTX_new(TLS_server_method());
	const struct tls_case cases[] = {
	    {"intruder: right CA, other name", intruder, "backup.test", false,
	     "certificate verify failed (hostname mismatch): the certificate names CN intruder.test, "
	     "DNS:intruder.test, IP:127.0.0.1, which is no configured primary",
	     NULL},
	    {"client certificate without EKU", noeku, NULL, false,
	     "(unsuitable certificate purpose): certificate of CN primary.test, DNS:primary.test: it "
	     "has no extendedKeyUsage (clientAuth is required)",
	     NULL},
	    {"client certificate for servers only", srvonly, NULL, false,
	     "certificate verify failed (unsuitable certificate purpose): certificate of CN "
	     "primary.test, DNS:primary.test, IP:127.0.0.1: its extendedKeyUsage lacks clientAuth",
	     NULL},
	    {"client named by CN alone", cn, "backup.test", true},
	    {"client with another CN alone", cn_other, "backup.test", false, "hostname mismatch",
	     NULL},
	    {"server has the wrong name (IP)", good, "127.0.0.2", false, NULL,
	     "certificate verify failed (IP address mismatch): the certificate names CN "
	     "backup.test, DNS:backup.test, IP:127.0.0.1, not '127.0.0.2'"},
	};
	const struct tls_case srv_case = {"server certificate without serverAuth", good,
					  "backup.test", false, NULL,
					  "(unsuitable certificate purpose): certificate of CN "
					  "backup.test, DNS:backup.test: its extendedKeyUsage lacks "
					  "serverAuth"};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		check_case(sctx, &cases[i]);
	/* A listener whose certificate is for clients only, made without our checks. */
	SSL_CTX_use_certificate_chain_file(bad_srv, in_tmp("srv_clionly.crt"));
	SSL_CTX_use_PrivateKey_file(bad_srv, in_tmp("srv_clionly.key"), SSL_FILETYPE_PEM);
	SSL_CTX_load_verify_locations(bad_srv, in_tmp("ca.crt"), NULL);
	SSL_CTX_set_verify(bad_srv, SSL_VERIFY_PEER, NULL);
	check_case(bad_srv, &srv_case);
	SSL_CTX_free(good);
	SSL_CTX_free(intruder);
	SSL_CTX_free(noeku);
	SSL_CTX_free(srvonly);
	SSL_CTX_free(cn);
	SSL_CTX_free(cn_other);
	SSL_CTX_free(bad_srv);
}

static void test_listen_errors(SSL_CTX *sctx)
{
	struct tls_callbacks cbs = {srv_established, srv_failed, NULL};
	struct event_base *base = event_base_new();
	struct tls_listener *l = NULL, *l2 = NULL;
	char err[512] = "", addr[64];

	CHECK_INT(tls_listen(base, sctx, "127.0.0.1", &cbs, &l, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "address '127.0.0.1': expected host:port");
	CHECK_INT(tls_listen(base, sctx, "[::1]:0", &cbs, &l, err, sizeof(err)), 0);
	snprintf(addr, sizeof(addr), "[::1]:%d", l ? tls_listener_port(l) : 0);
	CHECK_INT(tls_listen(base, sctx, addr, &cbs, &l2, err, sizeof(err)), -EADDRINUSE);
	CHECK_CONTAINS(err, "cannot listen on [::1]:");
	tls_listener_free(l);
	event_base_free(base);
}

/* ---------- accept() failing ---------- */

struct accept_errors {
	int calls;
	char last[256];
};

static void count_accept_error(int err, const char *reason, void *arg)
{
	struct accept_errors *a = arg;

	(void)err;
	a->calls++;
	snprintf(a->last, sizeof(a->last), "%s", reason);
}

static void no_established(struct bufferevent *bev, const char *peer, void *arg)
{
	(void)peer, (void)arg;
	bufferevent_free(bev);
}

static void no_failed(const char *peer, const char *reason, void *arg)
{
	(void)peer, (void)reason, (void)arg;
}

/*
 * Out of descriptors, accept() fails at once every time it is tried; a
 * listener that kept trying would spin (issue 8: 130-150% CPU and a
 * gigabyte of log). It must pause, longer each time: over one second,
 * 100 + 200 + 400 ms of pauses leave room for about four tries.
 */
static void test_accept_backoff(SSL_CTX *sctx)
{
	struct accept_errors a = {0};
	struct tls_callbacks cbs = {.established = no_established,
				    .failed = no_failed,
				    .accept_error = count_accept_error,
				    .arg = &a};
	struct event_base *base = event_base_new();
	struct tls_listener *l = NULL;
	struct timeval second = {.tv_sec = 1};
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct rlimit old, low;
	char err[512];
	int clients[4], next_fd;

	CHECK_INT(tls_listen(base, sctx, "127.0.0.1:0", &cbs, &l, err, sizeof(err)), 0);
	if (!l)
		return;
	sin.sin_port = htons(tls_listener_port(l));
	for (int i = 0; i < 4; i++) {
		clients[i] = socket(AF_INET, SOCK_STREAM, 0);
		CHECK_INT(connect(clients[i], (struct sockaddr *)&sin, sizeof(sin)), 0);
	}
	next_fd = open("/dev/null", O_RDONLY);
	close(next_fd);
	getrlimit(RLIMIT_NOFILE, &old);
	low = (struct rlimit){.rlim_cur = next_fd, .rlim_max = old.rlim_max};
	CHECK_INT(setrlimit(RLIMIT_NOFILE, &low), 0);
	event_base_loopexit(base, &second);
	event_base_dispatch(base);
	setrlimit(RLIMIT_NOFILE, &old);
	printf("accept() out of descriptors for 1 s: %d tries, last: %s\n", a.calls, a.last);
	CHECK(a.calls >= 1 && a.calls <= 5);
	CHECK_CONTAINS(a.last, "accept: Too many open files; not accepting for ");
	for (int i = 0; i < 4; i++)
		close(clients[i]);
	tls_listener_free(l);
	event_base_free(base);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void run_cases(SSL_CTX *sctx)
{
	SSL_CTX *good = client("ca.crt", "client"), *self = client("ca.crt", "self"),
		*other = client("ca.crt", "other"), *distrust = client("ca2.crt", "client"),
		*nocert = odd_client(false, 0), *tls12 = odd_client(true, TLS1_2_VERSION);
	const struct tls_case cases[] = {
	    {"right certificate", good, "backup.test", true},
	    {"right certificate, name by IP", good, "127.0.0.1", true},
	    {"no client certificate", nocert, NULL, false, "peer did not return a certificate",
	     "certificate required"},
	    {"self-signed client certificate", self, NULL, false,
	     "certificate verify failed (self-signed certificate)", "unknown ca"},
	    {"client certificate from another CA", other, NULL, false,
	     "certificate verify failed (unable to get local issuer certificate)", "unknown ca"},
	    {"server certificate from another CA", distrust, NULL, false, "unknown ca",
	     "certificate verify failed (self-signed certificate in certificate chain)"},
	    {"server has the wrong name", good, "other.test", false, NULL,
	     "certificate verify failed (hostname mismatch)"},
	    {"client stuck at TLS 1.2", tls12, NULL, false, "unsupported protocol", NULL},
	    {"nobody listening", good, NULL, false, NULL, "Connection refused", true},
	};

	CHECK(good && self && other && distrust);
	if (good && self && other && distrust)
		for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
			check_case(sctx, &cases[i]);
	SSL_CTX_free(good);
	SSL_CTX_free(self);
	SSL_CTX_free(other);
	SSL_CTX_free(distrust);
	SSL_CTX_free(nocert);
	SSL_CTX_free(tls12);
}

int main(void)
{
	SSL_CTX *sctx;
	char err[512];
	int r;

	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	r = make_certificates();
	if (r == 0) {
		sctx = tls_server_ctx(in_tmp("ca.crt"), in_tmp("server.crt"), in_tmp("server.key"),
				      err, sizeof(err));
		CHECK(sctx != NULL);
		if (sctx) {
			CHECK_INT(tls_ctx_expect_peer(sctx, "primary.test"), 0);
			CHECK_INT(tls_ctx_expect_peer(sctx, "primary.test"), 0); /* once is enough */
			run_cases(sctx);
			test_identity(sctx);
			test_accept_backoff(sctx);
			test_listen_errors(sctx);
		}
		test_context_errors();
		SSL_CTX_free(sctx);
	}
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	if (r)
		return r;
	UNIT_EXIT();
}
