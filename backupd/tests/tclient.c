/*
 * tclient.c - see tclient.h.
 */
#include "tclient.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "epoch.h"
#include "util.h"

/* ---------- files ---------- */

const char *t_tmpdir(const char *prefix)
{
	static char dirs[4][256];
	static int next;
	char *d = dirs[next++ % 4];

	snprintf(d, sizeof(dirs[0]), "/tmp/%s-XXXXXX", prefix);
	return mkdtemp(d);
}

const char *t_path(const char *dir, const char *name)
{
	static char bufs[16][512];
	static int next;
	char *p = bufs[next++ % 16];

	snprintf(p, sizeof(bufs[0]), "%s/%s", dir, name);
	return p;
}

int t_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -errno;
}

char *t_read_file(const char *path)
{
	char *text = NULL;
	return read_file(path, &text) < 0 ? NULL : text;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

void t_rm_rf(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static const char cert_cnf[] = "[req]\n"
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
			       "subjectKeyIdentifier = hash\n";

static const char cert_sh[] =
    "set -e\n"
    "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1.key\"; }\n"
    "ca() { key \"$1\"; CN=x openssl req -new -x509 -config cnf -extensions v3_ca "
    "-key \"$1.key\" -subj \"/CN=$2\" -days 2 -out \"$1.crt\"; }\n"
    "leaf() { key \"$1\"; CN=$2 openssl req -new -config cnf -key \"$1.key\" "
    "-subj \"/CN=$2\" -out \"$1.csr\"; CN=$2 openssl x509 -req -in \"$1.csr\" "
    "-CA \"$3.crt\" -CAkey \"$3.key\" -CAcreateserial -days 2 -extfile cnf "
    "-extensions v3_leaf -out \"$1.crt\"; }\n"
    "ca ca 'CheckSync test CA'\n"
    "ca ca2 'Another CA'\n"
    "leaf backup backup.test ca\n"
    "leaf primary primary.test ca\n"
    "leaf other primary.test ca2\n";

int t_make_certs(const char *dir)
{
	if (system("command -v openssl >/dev/null") != 0) {
		printf("no openssl command: skipped\n");
		return 77;
	}
	if (t_write_file(t_path(dir, "cnf"), cert_cnf) < 0 ||
	    t_write_file(t_path(dir, "certs.sh"), cert_sh) < 0)
		return 1;
	if (t_sh(t_path(dir, "certs.log"), "cd '%s' && sh certs.sh", dir) != 0) {
		fprintf(stderr, "making certificates failed; see %s\n", t_path(dir, "certs.log"));
		return 1;
	}
	return 0;
}

int t_free_port(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* ---------- processes ---------- */

uint64_t t_now_ms(void) { return now_us() / 1000; }

void t_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

pid_t t_spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	int in = open("/dev/null", O_RDONLY);
	if (out < 0 || in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
		_exit(127);
	signal(SIGPIPE, SIG_DFL);
	execv(argv[0], argv);
	_exit(127);
}

int t_wait_exit(pid_t pid, int ms)
{
	uint64_t deadline = t_now_ms() + ms;
	int status;

	do {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0)
			return -1;
		t_sleep_ms(10);
	} while (t_now_ms() < deadline);
	return -1;
}

int t_sh(const char *log, const char *fmt, ...)
{
	char cmd[4096], full[4700];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "(%s) >>'%s' 2>&1", cmd, log);
	st = system(full);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

bool t_wait_file_contains(const char *path, const char *needle, int ms)
{
	uint64_t deadline = t_now_ms() + ms;

	do {
		char *text = t_read_file(path);
		bool found = text && strstr(text, needle);
		free(text);
		if (found)
			return true;
		t_sleep_ms(50);
	} while (t_now_ms() < deadline);
	return false;
}

/* ---------- HTTP ---------- */

char *t_http_get(int port, const char *path, int *status)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	_cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t len = 0, cap = 65536;
	char req[600], *buf, *body;

	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return NULL;
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, strlen(req)) < 0)
		return NULL;
	buf = malloc(cap + 1);
	while (buf) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 3000) <= 0)
			break;
		n = read(fd, buf + len, cap - len);
		if (n <= 0)
			break;
		len += n;
		if (len == cap) {
			char *nb = realloc(buf, (cap *= 2) + 1);
			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
		}
	}
	if (!buf || len == 0 || sscanf(buf, "HTTP/%*s %d", status) != 1) {
		free(buf);
		return NULL;
	}
	buf[len] = 0;
	body = strstr(buf, "\r\n\r\n");
	body = strdup(body ? body + 4 : "");
	free(buf);
	return body;
}

/* ---------- the primary ---------- */

static int ssl_fail(struct tclient *c, const char *what)
{
	unsigned long e = ERR_get_error();

	snprintf(c->err, sizeof(c->err), "%s: %s", what,
		 e	 ? ERR_reason_error_string(e)
		 : errno ? strerror(errno)
			 : "connection closed");
	ERR_clear_error();
	return -1;
}

struct tclient *tc_connect(SSL_CTX *ctx, int port, char *err, size_t errlen)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct tclient *c = calloc(1, sizeof(*c));

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		snprintf(err, errlen, "connect to port %d: %s", port, strerror(errno));
		tc_close(c);
		return NULL;
	}
	c->ssl = SSL_new(ctx);
	c->dec = wire_decoder_new();
	SSL_set_fd(c->ssl, c->fd);
	if (SSL_connect(c->ssl) != 1) {
		ssl_fail(c, "handshake");
		snprintf(err, errlen, "%s", c->err);
		tc_close(c);
		return NULL;
	}
	return c;
}

void tc_close(struct tclient *c)
{
	if (!c)
		return;
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	if (c->dec)
		wire_decoder_free(c->dec);
	free(c);
}

int tc_send_raw(struct tclient *c, const void *p, size_t n)
{
	const char *b = p;

	while (n) {
		int k = SSL_write(c->ssl, b, n > (1u << 30) ? (1 << 30) : (int)n);
		if (k <= 0)
			return ssl_fail(c, "write");
		b += k;
		n -= k;
	}
	return 0;
}

int tc_send(struct tclient *c, const struct wire_msg *m)
{
	msgpack_sbuffer sb;
	int r;

	msgpack_sbuffer_init(&sb);
	r = wire_pack(&sb, m);
	if (r < 0)
		snprintf(c->err, sizeof(c->err), "wire_pack %s: %s", wire_type_name(m->type),
			 strerror(-r));
	else
		r = tc_send_raw(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return r < 0 ? -1 : 0;
}

uint64_t tc_incarnation = TC_INCARNATION;
uint32_t tc_hello_flags;

int tc_hello(struct tclient *c, const char *service)
{
	struct wire_msg m = {.type = WIRE_HELLO,
			     .hello = {.proto_version = WIRE_PROTO_VERSION,
				       .role = 0,
				       .service = service,
				       .boot_id = "test-boot",
				       .pid = getpid(),
				       .incarnation = tc_incarnation,
				       .flags = tc_hello_flags}};
	return tc_send(c, &m);
}

int tc_heartbeat(struct tclient *c, uint64_t epoch)
{
	struct wire_msg m = {
	    .type = WIRE_HEARTBEAT,
	    .heartbeat = {.seq = ++c->hb_seq, .time_us = now_us(), .epoch = epoch}};
	return tc_send(c, &m);
}

int tc_recv(struct tclient *c, struct wire_msg *m, int ms, int hb_ms)
{
	uint64_t deadline = t_now_ms() + ms, next_hb = t_now_ms() + hb_ms;
	static char buf[1 << 16];

	for (;;) {
		int r = wire_decoder_next(c->dec, m, c->err, sizeof(c->err));
		uint64_t now = t_now_ms();
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int wait_ms;

		if (r < 0)
			return -1;
		if (r == 1 && m->type == WIRE_HEARTBEAT) {
			c->heartbeats_seen++;
			c->last_heartbeat_epoch = m->heartbeat.epoch;
			c->peer_time_us = m->heartbeat.time_us;
			c->peer_at_us = now_us();
			continue;
		}
		if (r == 1)
			return 1;
		if (now >= deadline)
			return 0;
		if (hb_ms && now >= next_hb) {
			if (tc_heartbeat(c, 0) < 0)
				return -1;
			next_hb = now + hb_ms;
		}
		wait_ms = deadline - now;
		if (hb_ms && (int)(next_hb - now) < wait_ms)
			wait_ms = next_hb - now;
		if (!SSL_pending(c->ssl) && poll(&p, 1, wait_ms) == 0)
			continue;
		r = SSL_read(c->ssl, buf, sizeof(buf));
		if (r <= 0)
			return ssl_fail(c, "read");
		if (wire_decoder_feed(c->dec, buf, r) == -ENOMEM)
			return -1;
	}
}

/* ---------- epochs ---------- */

struct epoch_gen {
	struct wire_epoch_hash hash;
	t_epoch_fn fn;
	void *arg;
};

/* Hash, then hand over; fn's non-zero return stops the epoch. */
static int gen_msg(struct epoch_gen *g, const struct wire_msg *m)
{
	wire_epoch_hash_add(&g->hash, m);
	return g->fn(m, g->arg);
}

static int gen_metadata(struct epoch_gen *g, const struct image *img)
{
	_cleanup_free_ struct wire_vma *v = NULL;
	size_t n = img->n_threads + 1;
	msgpack_sbuffer sbs[n], fds;
	struct wire_blob blobs[n];
	struct wire_msg m = {.type = WIRE_MAPPINGS};
	int r = epoch_wire_vmas(img, &v, &m.mappings.n);

	if (r < 0)
		return r;
	m.mappings.vmas = v;
	r = gen_msg(g, &m);
	for (size_t i = 0; i < n; i++) {
		msgpack_sbuffer_init(&sbs[i]);
		if (i == 0)
			image_pack_process(img, &sbs[i]);
		else
			image_pack_thread(&img->threads[i - 1], &sbs[i]);
		blobs[i] = (struct wire_blob){(const uint8_t *)sbs[i].data, sbs[i].size};
	}
	m = (struct wire_msg){.type = WIRE_THREADS, .threads = {blobs, n}};
	if (r == 0)
		r = gen_msg(g, &m);
	for (size_t i = 0; i < n; i++)
		msgpack_sbuffer_destroy(&sbs[i]);
	msgpack_sbuffer_init(&fds);
	image_pack_fds(img, &fds);
	m = (struct wire_msg){.type = WIRE_FDS, .fds.table = {(const uint8_t *)fds.data, fds.size}};
	if (r == 0)
		r = gen_msg(g, &m);
	msgpack_sbuffer_destroy(&fds);
	return r;
}

static int gen_pages(struct epoch_gen *g, const struct tc_run *runs, size_t n_runs)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < n_runs; i++) {
		for (uint64_t off = 0; r == 0 && off < runs[i].npages;) {
			uint64_t n = runs[i].npages - off;
			struct wire_msg m;

			if (n > WIRE_MAX_PAGES)
				n = WIRE_MAX_PAGES;
			m = (struct wire_msg){.type = WIRE_PAGES,
					      .pages = {.addr = runs[i].addr + off * PAGE_SIZE,
							.npages = n,
							.data = runs[i].data + off * PAGE_SIZE}};
			r = gen_msg(g, &m);
			off += n;
		}
	}
	return r;
}

int t_epoch_each(const struct image *img, uint64_t epoch, uint64_t base, const struct tc_run *runs,
		 size_t n_runs, t_epoch_fn fn, void *arg)
{
	struct epoch_gen g = {.fn = fn, .arg = arg};
	struct wire_msg m = {.type = WIRE_EPOCH_BEGIN,
			     .epoch_begin = {.epoch = epoch,
					     .base_epoch = base,
					     .incarnation = tc_incarnation}};
	int r;

	wire_epoch_hash_init(&g.hash);
	r = gen_msg(&g, &m);
	if (r == 0)
		r = gen_metadata(&g, img);
	if (r == 0)
		r = gen_pages(&g, runs, n_runs);
	if (r == 0) {
		m = (struct wire_msg){.type = WIRE_COMMIT};
		wire_epoch_hash_final(&g.hash, &m.commit);
		r = fn(&m, arg);
	}
	wire_epoch_hash_done(&g.hash);
	return r;
}

struct tc_sender {
	struct tclient *c;
	uint64_t pages_sent, torn_at_page;
};

/* 1 once torn: the connection dies halfway through the PAGES message holding that page. */
static int send_one(const struct wire_msg *m, void *arg)
{
	struct tc_sender *s = arg;
	bool torn = m->type == WIRE_PAGES && s->torn_at_page >= s->pages_sent &&
		    s->torn_at_page < s->pages_sent + m->pages.npages;
	msgpack_sbuffer sb;
	int r;

	msgpack_sbuffer_init(&sb);
	r = wire_pack(&sb, m);
	if (r < 0) {
		snprintf(s->c->err, sizeof(s->c->err), "wire_pack %s: %s", wire_type_name(m->type),
			 strerror(-r));
		msgpack_sbuffer_destroy(&sb);
		return -1;
	}
	if (torn)
		sb.size /= 2;
	r = tc_send_raw(s->c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	if (m->type == WIRE_PAGES)
		s->pages_sent += m->pages.npages;
	return r < 0 ? -1 : torn;
}

int tc_send_epoch(struct tclient *c, const struct image *img, uint64_t epoch, uint64_t base,
		  const struct tc_run *runs, size_t n_runs, uint64_t torn_at_page)
{
	struct tc_sender s = {.c = c, .torn_at_page = torn_at_page};
	int r = t_epoch_each(img, epoch, base, runs, n_runs, send_one, &s);

	return r < 0 ? -1 : 0;
}

struct tc_run *tc_image_runs(const struct image *img, size_t *n)
{
	struct tc_run *runs = calloc(img->n_runs + 1, sizeof(*runs));

	for (size_t i = 0; runs && i < img->n_runs; i++)
		runs[i] = (struct tc_run){img->runs[i].addr, img->runs[i].npages,
					  img->pages + img->runs[i].offset};
	*n = img->n_runs;
	return runs;
}

/* ---------- a synthetic image ---------- */

struct image *t_synth_image(void)
{
	struct image *img = image_new();
	struct image_vma *v;
	struct image_thread *t;
	int f;

	img->pid = 4242;
	img->exe = strdup("/bin/true");
	img->cwd = strdup("/");
	f = image_add_file(img, "/bin/true");
	img->files[f].size = 1;
	img->exe_file = f;
	v = array_push(&img->vmas, &img->n_vmas, &img->cap_vmas, sizeof(*v));
	*v = (struct image_vma){0x400000, 0x401000, 5, VMA_FILE, false, 0, f};
	v = array_push(&img->vmas, &img->n_vmas, &img->cap_vmas, sizeof(*v));
	*v = (struct image_vma){0x10000000, 0x10000000 + 64 * PAGE_SIZE, 3, VMA_ANON, false, 0, -1};
	v = array_push(&img->vmas, &img->n_vmas, &img->cap_vmas, sizeof(*v));
	*v = (struct image_vma){0x20000000, 0x20000000 + 4 * PAGE_SIZE, 3, VMA_ANON, true, 0, -1};
	t = array_push(&img->threads, &img->n_threads, &img->cap_threads, sizeof(*t));
	*t = (struct image_thread){.tid = 4242};
	snprintf(t->comm, sizeof(t->comm), "synth");
	return img;
}
