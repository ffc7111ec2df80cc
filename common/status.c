/*
 * status.c - see status.h.
 *
 * A report is a flat list of rows built on the spot for one client and
 * rendered twice over: as the socket's tab-separated lines and as
 * Prometheus text. Names, roles and units are copied into fixed-size
 * fields (cut at their size), and anything that could break a line or a
 * label (tabs, newlines, quotes, backslashes) is replaced on the way in,
 * so rendering never has to escape or fail.
 *
 * Each client, of the socket or of /metrics, gets its own bufferevent that
 * is freed once the answer is flushed, or STATUS_CLIENT_TIMEOUT_SEC after it
 * connected, whichever comes first (a deadline, not an inactivity timeout:
 * a client trickling bytes or reading slowly is cut off all the same); the
 * server keeps them in a list so that freeing the server frees them too.
 * At most STATUS_MAX_CLIENTS of each kind at a time: others are closed at
 * once.
 *
 * /metrics is served by a few lines of our own rather than evhttp: evhttp
 * (libevent 2.1) can bound a request's size but neither how many
 * connections it holds nor for how long, and we need only GET of one
 * path: read the request head (at most STATUS_MAX_REQUEST bytes), answer
 * and close.
 */
#include "status.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "hist.h"
#include "util.h"

#define STATUS_CLIENT_TIMEOUT_SEC 5
#define STATUS_MAX_ANSWER (1u << 20)
#define STATUS_MAX_CLIENTS 16	   /* per kind: socket, metrics */
#define STATUS_MAX_REQUEST 8192 /* an HTTP request head, request line included */

struct status_row {
	size_t service; /* index into services */
	char name[64];
	char unit[16];
	char help[160];
	bool counter;
	double value;
	char text[256]; /* unit "text": the value is this, not a number */
	const struct hist *hist; /* a histogram row (unit "seconds"): valid while the report is */
};

struct status_service {
	char name[80];
	char role[32];
};

struct status_report {
	struct status_service *services;
	size_t n_services, cap_services;
	struct status_row *rows;
	size_t n_rows, cap_rows;
	bool failed; /* out of memory somewhere: the answer says so instead */
};

struct status_client {
	LIST_ENTRY(status_client) link;
	struct status_server *server;
	struct bufferevent *bev;
	struct event *deadline;
	bool http;
};

struct status_server {
	struct event_base *base;
	char *socket_path;
	struct evconnlistener *lev;
	struct evconnlistener *http; /* metrics_listen */
	struct event *resume;	      /* re-enables both listeners after an accept() error */
	size_t n_clients[2];	      /* socket, http */
	char prefix[32];
	status_fill_fn fill;
	void *userdata;
	LIST_HEAD(, status_client) clients;
};

/* ---------- building a report ---------- */

/* Copy s into buf, replacing what could break a line or a label. */
static void copy_clean(char *buf, size_t len, const char *s)
{
	size_t i = 0;

	for (; s && s[i] && i + 1 < len; i++)
		buf[i] = (s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '"' ||
			  s[i] == '\\')
			     ? '?'
			     : s[i];
	buf[i] = 0;
}

void status_report_service(struct status_report *r, const char *service, const char *role)
{
	struct status_service *s =
	    array_push(&r->services, &r->n_services, &r->cap_services, sizeof(*s));

	if (!s) {
		r->failed = true;
		return;
	}
	copy_clean(s->name, sizeof(s->name), service);
	copy_clean(s->role, sizeof(s->role), role);
}

static void add_row(struct status_report *r, const char *name, const char *unit, double value,
		    const char *help, bool counter)
{
	struct status_row *row;

	if (r->n_services == 0) { /* a row outside any service is a caller's bug */
		r->failed = true;
		return;
	}
	row = array_push(&r->rows, &r->n_rows, &r->cap_rows, sizeof(*row));
	if (!row) {
		r->failed = true;
		return;
	}
	*row = (struct status_row){.service = r->n_services - 1, .counter = counter, .value = value};
	copy_clean(row->name, sizeof(row->name), name);
	copy_clean(row->unit, sizeof(row->unit), unit);
	copy_clean(row->help, sizeof(row->help), help);
}

void status_report_gauge(struct status_report *r, const char *name, const char *unit, double value,
			 const char *help)
{
	add_row(r, name, unit, value, help, false);
}

void status_report_counter(struct status_report *r, const char *name, const char *unit,
			   double value, const char *help)
{
	add_row(r, name, unit, value, help, true);
}

void status_report_text(struct status_report *r, const char *name, const char *text,
			const char *help)
{
	add_row(r, name, "text", 1, help, false);
	if (!r->failed && r->n_rows)
		copy_clean(r->rows[r->n_rows - 1].text, sizeof(r->rows[0].text), text);
}

void status_report_histogram(struct status_report *r, const char *name, const struct hist *h,
			     const char *help)
{
	add_row(r, name, "seconds", h->count ? hist_mean(h) : NAN, help, false);
	if (!r->failed)
		r->rows[r->n_rows - 1].hist = h;
}

static void report_done(struct status_report *r)
{
	free(r->services);
	free(r->rows);
}

/* ---------- rendering ---------- */

static void socket_value(struct evbuffer *out, double v)
{
	if (isnan(v))
		evbuffer_add_printf(out, "-\n");
	else
		evbuffer_add_printf(out, "%.17g\n", v);
}

/* A histogram on the socket: NAME_p50, NAME_p99 (of the last HIST_RING samples), NAME_count. */
static void render_socket_hist(const struct status_service *s, const struct status_row *row,
			       struct evbuffer *out)
{
	evbuffer_add_printf(out, "%s\t%s\t%s_p50\tseconds\t", s->name, s->role, row->name);
	socket_value(out, hist_percentile(row->hist, 50));
	evbuffer_add_printf(out, "%s\t%s\t%s_p99\tseconds\t", s->name, s->role, row->name);
	socket_value(out, hist_percentile(row->hist, 99));
	evbuffer_add_printf(out, "%s\t%s\t%s_count\t\t%" PRIu64 "\n", s->name, s->role,
			    row->name, row->hist->count);
}

static void render_socket(const struct status_report *r, struct evbuffer *out)
{
	evbuffer_add_printf(out, "%s\n", STATUS_PROTO_LINE);
	if (r->failed) {
		evbuffer_add_printf(out, "error\tout of memory\n");
		return;
	}
	for (size_t i = 0; i < r->n_rows; i++) {
		const struct status_row *row = &r->rows[i];
		const struct status_service *s = &r->services[row->service];

		if (row->hist) {
			render_socket_hist(s, row, out);
			continue;
		}
		evbuffer_add_printf(out, "%s\t%s\t%s\t%s\t", s->name, s->role, row->name,
				    row->unit);
		if (strcmp(row->unit, "text") == 0)
			evbuffer_add_printf(out, "%s\n", row->text[0] ? row->text : "-");
		else if (isnan(row->value))
			evbuffer_add_printf(out, "-\n");
		else
			evbuffer_add_printf(out, "%.17g\n", row->value);
	}
}

static void metric_name(const struct status_server *srv, const struct status_row *row, char *buf,
			size_t len)
{
	bool text = strcmp(row->unit, "text") == 0;

	/* Prometheus conventions: the base unit last but for a counter's _total. */
	snprintf(buf, len, "%s_%s%s%s%s", srv->prefix, row->name, row->unit[0] && !text ? "_" : "",
		 text ? "" : row->unit, row->counter ? "_total" : "");
}

/* NAME_bucket{...,le="B"} cumulative counts, NAME_sum, NAME_count: a Prometheus histogram. */
static void render_metric_hist(const char *name, const struct status_service *s,
			       const struct hist *h, struct evbuffer *out)
{
	uint64_t cum = 0;

	for (size_t b = 0; b <= HIST_NBOUNDS; b++) {
		char le[32];

		cum += h->bucket[b];
		if (b < HIST_NBOUNDS)
			snprintf(le, sizeof(le), "%g", hist_bounds[b]);
		else
			snprintf(le, sizeof(le), "+Inf");
		evbuffer_add_printf(out, "%s_bucket{service=\"%s\",role=\"%s\",le=\"%s\"} %" PRIu64
				    "\n", name, s->name, s->role, le, cum);
	}
	evbuffer_add_printf(out, "%s_sum{service=\"%s\",role=\"%s\"} %.17g\n", name, s->name,
			    s->role, h->sum);
	evbuffer_add_printf(out, "%s_count{service=\"%s\",role=\"%s\"} %" PRIu64 "\n", name,
			    s->name, s->role, h->count);
}

/* Every sample of one metric together, under one HELP and TYPE, as the format requires. */
static void render_metric(const struct status_server *srv, const struct status_report *r,
			  size_t first, struct evbuffer *out)
{
	const struct status_row *f = &r->rows[first];
	char name[128];

	metric_name(srv, f, name, sizeof(name));
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, f->help, name,
			    f->hist ? "histogram" : f->counter ? "counter" : "gauge");
	for (size_t i = first; i < r->n_rows; i++) {
		const struct status_row *row = &r->rows[i];
		const struct status_service *s = &r->services[row->service];

		if (strcmp(row->name, f->name) != 0 || strcmp(row->unit, f->unit) != 0)
			continue;
		if (row->hist) {
			render_metric_hist(name, s, row->hist, out);
			continue;
		}
		if (isnan(row->value))
			continue;
		if (strcmp(row->unit, "text") == 0)
			evbuffer_add_printf(out, "%s{service=\"%s\",role=\"%s\",%s=\"%s\"} 1\n", name,
					    s->name, s->role, row->name, row->text);
		else
			evbuffer_add_printf(out, "%s{service=\"%s\",role=\"%s\"} %.17g\n", name,
					    s->name, s->role, row->value);
	}
}

static void render_metrics(const struct status_server *srv, const struct status_report *r,
			   struct evbuffer *out)
{
	for (size_t i = 0; i < r->n_rows; i++) {
		bool seen = strcmp(r->rows[i].unit, "text") == 0; /* text rows are no metrics */

		for (size_t k = 0; k < i && !seen; k++)
			seen = strcmp(r->rows[k].name, r->rows[i].name) == 0 &&
			       strcmp(r->rows[k].unit, r->rows[i].unit) == 0;
		if (!seen)
			render_metric(srv, r, i, out);
	}
}

/* ---------- the status socket ---------- */

static void client_free(struct status_client *c)
{
	LIST_REMOVE(c, link);
	c->server->n_clients[c->http]--;
	if (c->deadline)
		event_free(c->deadline);
	if (c->bev)
		bufferevent_free(c->bev);
	free(c);
}

static void client_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	client_free(arg);
}

/* A client for fd, or NULL (fd closed) when there are too many or no memory. */
static struct status_client *client_new(struct status_server *srv, int fd, bool http)
{
	struct timeval tv = {.tv_sec = STATUS_CLIENT_TIMEOUT_SEC};
	struct status_client *c;

	if (srv->n_clients[http] >= STATUS_MAX_CLIENTS || !(c = calloc(1, sizeof(*c)))) {
		close(fd);
		return NULL;
	}
	c->server = srv;
	c->http = http;
	srv->n_clients[http]++;
	LIST_INSERT_HEAD(&srv->clients, c, link);
	c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->deadline = evtimer_new(srv->base, client_deadline, c);
	if (!c->bev || !c->deadline || evtimer_add(c->deadline, &tv) < 0) {
		if (!c->bev)
			close(fd);
		client_free(c);
		return NULL;
	}
	return c;
}

static void client_written(struct bufferevent *bev, void *arg)
{
	(void)bev;
	client_free(arg);
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev, (void)what;
	client_free(arg);
}

static void on_status_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			     int salen, void *arg)
{
	struct status_server *srv = arg;
	struct status_report r = {0};
	struct status_client *c = client_new(srv, fd, false);

	(void)lev, (void)sa, (void)salen;
	if (!c)
		return;
	srv->fill(&r, srv->userdata);
	render_socket(&r, bufferevent_get_output(c->bev));
	report_done(&r);
	/* The write callback runs once the output has drained: then we are done. */
	bufferevent_setcb(c->bev, NULL, client_written, client_event, c);
	bufferevent_enable(c->bev, EV_WRITE);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct status_server *srv = arg;

	(void)fd, (void)what;
	if (srv->lev)
		evconnlistener_enable(srv->lev);
	if (srv->http)
		evconnlistener_enable(srv->http);
}

/* accept() failed (out of descriptors, say): pause a second rather than retry in a loop. */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct status_server *srv = arg;
	struct timeval second = {.tv_sec = 1};

	evconnlistener_disable(lev);
	if (srv->resume)
		evtimer_add(srv->resume, &second);
}

/* A socket file nobody answers on is left over from a daemon that died: replace it. */
static int claim_socket_path(const struct sockaddr_un *sun, char *err, size_t errlen)
{
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0) {
		snprintf(err, errlen, "status socket %s: another daemon answers on it",
			 sun->sun_path);
		return -EADDRINUSE;
	}
	if (errno == ECONNREFUSED && unlink(sun->sun_path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "status socket %s: cannot remove the stale one: %s",
			 sun->sun_path, strerror(errno));
		return -errno;
	}
	return 0;
}

static int socket_address(const char *path, struct sockaddr_un *sun, char *err, size_t errlen)
{
	*sun = (struct sockaddr_un){.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun->sun_path)) {
		snprintf(err, errlen, "status socket %s: path longer than %zu bytes", path,
			 sizeof(sun->sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sun->sun_path, path);
	return 0;
}

static int listen_status_socket(struct status_server *srv, const char *path, char *err,
				size_t errlen)
{
	struct sockaddr_un sun;
	_cleanup_close_ int fd = -1;
	int r;

	r = socket_address(path, &sun, err, errlen);
	if (r < 0)
		return r;
	r = claim_socket_path(&sun, err, errlen);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(path, 0660) < 0 || listen(fd, 16) < 0) {
		r = -errno;
		snprintf(err, errlen, "status socket %s: %s", path, strerror(-r));
		return r;
	}
	srv->lev = evconnlistener_new(srv->base, on_status_accept, srv,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!srv->lev) {
		unlink(path);
		return -ENOMEM;
	}
	evconnlistener_set_error_cb(srv->lev, on_accept_error);
	TAKE_FD(fd);
	srv->socket_path = strdup(path);
	return srv->socket_path ? 0 : -ENOMEM;
}

/* ---------- metrics over HTTP ---------- */

/* An answer, then close once it has gone out. */
static void http_answer(struct status_client *c, const char *status, const char *type,
			struct evbuffer *body, bool head_only)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t len = body ? evbuffer_get_length(body) : 0;

	evbuffer_add_printf(out,
			    "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			    "Connection: close\r\n\r\n",
			    status, type, len);
	if (body && !head_only)
		evbuffer_add_buffer(out, body);
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setcb(c->bev, NULL, client_written, client_event, c);
	bufferevent_enable(c->bev, EV_WRITE);
}

static void http_error(struct status_client *c, const char *status)
{
	struct evbuffer *body = evbuffer_new();

	if (body)
		evbuffer_add_printf(body, "%s\n", status);
	http_answer(c, status, "text/plain; charset=utf-8", body, false);
	if (body)
		evbuffer_free(body);
}

static void http_metrics(struct status_client *c, bool head_only)
{
	struct status_server *srv = c->server;
	struct status_report r = {0};
	struct evbuffer *body = evbuffer_new();

	if (!body) {
		http_error(c, "500 Internal Server Error");
		return;
	}
	srv->fill(&r, srv->userdata);
	if (r.failed)
		http_error(c, "500 Internal Server Error");
	else {
		render_metrics(srv, &r, body);
		http_answer(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, head_only);
	}
	report_done(&r);
	evbuffer_free(body);
}

/* "GET /metrics HTTP/1.1" (a query string is ignored), GET or HEAD only. */
static void http_request_line(struct status_client *c, const char *line)
{
	char method[8], target[256], version[16];
	size_t plen;

	if (sscanf(line, "%7s %255s %15s", method, target, version) != 3 ||
	    strncmp(version, "HTTP/1.", 7) != 0) {
		http_error(c, "400 Bad Request");
		return;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		http_error(c, "405 Method Not Allowed");
		return;
	}
	plen = strcspn(target, "?");
	if (plen != strlen("/metrics") || strncmp(target, "/metrics", plen) != 0) {
		http_error(c, "404 Not Found");
		return;
	}
	http_metrics(c, method[0] == 'H');
}

/* Wait for the whole request head (it ends with an empty line); no body is read. */
static void http_read(struct bufferevent *bev, void *arg)
{
	struct status_client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	char *line;

	if (end.pos < 0) {
		if (evbuffer_get_length(in) > STATUS_MAX_REQUEST)
			http_error(c, "431 Request Header Fields Too Large");
		return;
	}
	if ((size_t)end.pos > STATUS_MAX_REQUEST) {
		http_error(c, "431 Request Header Fields Too Large");
		return;
	}
	line = evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF);
	if (!line) {
		http_error(c, "400 Bad Request");
		return;
	}
	http_request_line(c, line);
	free(line);
}

static void on_metrics_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			      int salen, void *arg)
{
	struct status_client *c = client_new(arg, fd, true);

	(void)lev, (void)sa, (void)salen;
	if (!c)
		return;
	/* Reading stops at a little more than the limit: a longer head is refused anyway. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, STATUS_MAX_REQUEST + 4);
	bufferevent_setcb(c->bev, http_read, NULL, client_event, c);
	bufferevent_enable(c->bev, EV_READ);
}

static void addrinfo_freep(struct addrinfo **ai)
{
	if (*ai)
		freeaddrinfo(*ai);
}

/* Our own socket, so it is close-on-exec whatever libevent's defaults are: hooks must not get it. */
static int listen_metrics(struct status_server *srv, const struct hostport *hp, char *err,
			  size_t errlen)
{
	__attribute__((cleanup(addrinfo_freep))) struct addrinfo *ai = NULL;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
	_cleanup_close_ int fd = -1;
	char port[8], where[HOSTPORT_HOST_MAX + 16];
	int one = 1, r;

	hostport_format(hp, where, sizeof(where));
	snprintf(port, sizeof(port), "%u", hp->port);
	r = getaddrinfo(hp->host, port, &hints, &ai);
	if (r != 0) {
		snprintf(err, errlen, "metrics_listen %s: %s", where, gai_strerror(r));
		return -EADDRNOTAVAIL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot serve metrics on %s: %s", where, strerror(-r));
		return r;
	}
	srv->http = evconnlistener_new(srv->base, on_metrics_accept, srv,
				       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!srv->http)
		return -ENOMEM;
	TAKE_FD(fd); /* the listener's now */
	evconnlistener_set_error_cb(srv->http, on_accept_error);
	return 0;
}

/* ---------- the server ---------- */

int status_server_new(struct event_base *base, const char *socket_path,
		      const struct hostport *metrics, const char *prefix, status_fill_fn fill,
		      void *userdata, struct status_server **out, char *err, size_t errlen)
{
	struct status_server *srv = calloc(1, sizeof(*srv));
	int r;

	if (!srv)
		return -ENOMEM;
	srv->base = base;
	srv->fill = fill;
	srv->userdata = userdata;
	snprintf(srv->prefix, sizeof(srv->prefix), "%s", prefix);
	srv->resume = evtimer_new(base, on_resume, srv);
	r = srv->resume ? listen_status_socket(srv, socket_path, err, errlen) : -ENOMEM;
	if (r >= 0 && metrics && hostport_is_set(metrics))
		r = listen_metrics(srv, metrics, err, errlen);
	if (r < 0) {
		if (r == -ENOMEM)
			snprintf(err, errlen, "status: out of memory");
		status_server_free(srv);
		return r;
	}
	*out = srv;
	return 0;
}

void status_server_free(struct status_server *s)
{
	if (!s)
		return;
	while (!LIST_EMPTY(&s->clients))
		client_free(LIST_FIRST(&s->clients));
	if (s->lev)
		evconnlistener_free(s->lev);
	if (s->socket_path)
		unlink(s->socket_path);
	if (s->http)
		evconnlistener_free(s->http);
	if (s->resume)
		event_free(s->resume);
	free(s->socket_path);
	free(s);
}

/* ---------- the status command ---------- */

static int read_answer_within(const char *path, int timeout_ms, char **out, char *err,
			      size_t errlen)
{
	struct sockaddr_un sun;
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = malloc(STATUS_MAX_ANSWER + 1);
	size_t len = 0;
	int r;

	if (!buf)
		return -ENOMEM;
	r = socket_address(path, &sun, err, errlen);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot reach the daemon at %s: %s", path, strerror(-r));
		return r;
	}
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, timeout_ms) == 0) {
			snprintf(err, errlen, "%s: no answer within %d ms", path, timeout_ms);
			return -ETIMEDOUT;
		}
		n = read(fd, buf + len, STATUS_MAX_ANSWER - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(err, errlen, "%s: %s", path, strerror(-r));
			return r;
		}
		if (n == 0 || (len += n) == STATUS_MAX_ANSWER)
			break;
	}
	buf[len] = 0;
	*out = TAKE_PTR(buf);
	return 0;
}

static int read_answer(const char *path, char **out, char *err, size_t errlen)
{
	return read_answer_within(path, STATUS_CLIENT_TIMEOUT_SEC * 1000, out, err, errlen);
}

int status_read_value(const char *socket_path, const char *service, const char *name,
		      int timeout_ms, double *value, char *err, size_t errlen)
{
	_cleanup_free_ char *text = NULL;
	char *save = NULL;
	int r = read_answer_within(socket_path, timeout_ms, &text, err, errlen);

	if (r < 0)
		return r;
	/* After the version line: SERVICE TAB ROLE TAB NAME TAB UNIT TAB VALUE, one row a line. */
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[5], *rest = line, *w;
		int n = 0;

		while (n < 5 && (w = strsep(&rest, "\t"))) /* a unit may be empty: no strtok */
			f[n++] = w;
		if (n == 5 && strcmp(f[0], service) == 0 && strcmp(f[2], name) == 0) {
			char *end;
			*value = strtod(f[4], &end);
			return end != f[4] && !*end ? 0 : -EINVAL;
		}
	}
	snprintf(err, errlen, "%s: no %s for %s", socket_path, name, service);
	return -ENOENT;
}

static void print_value(FILE *out, const char *unit, const char *text)
{
	char *end;
	double v = strtod(text, &end);

	if (strcmp(unit, "text") == 0 || end == text || *end) {
		fprintf(out, "%s\n", text);
	} else if (strcmp(unit, "seconds") == 0) {
		if (v < 10)
			fprintf(out, "%.0f ms\n", v * 1000);
		else
			fprintf(out, "%.1f s\n", v);
	} else if (strcmp(unit, "bytes") == 0) {
		if (v >= 1 << 20)
			fprintf(out, "%.0f bytes (%.1f MiB)\n", v, v / (1 << 20));
		else
			fprintf(out, "%.0f bytes\n", v);
	} else if (v == floor(v) && fabs(v) < 1e15) {
		fprintf(out, "%.0f\n", v);
	} else {
		fprintf(out, "%g\n", v);
	}
}

/* "SERVICE\tROLE\tNAME\tUNIT\tVALUE": a header line per service, then "  name   value". */
static int print_rows(char *text, FILE *out, const char *path, char *err, size_t errlen)
{
	char *save = NULL, *line = strtok_r(text, "\n", &save);
	char current[96] = "";

	if (!line || strcmp(line, STATUS_PROTO_LINE) != 0) {
		snprintf(err, errlen, "%s: not a CheckSync status answer", path);
		return -EPROTO;
	}
	while ((line = strtok_r(NULL, "\n", &save))) {
		char *f[5];
		size_t n = 0;

		/* strsep, not strtok: the unit field may be empty. */
		while (n < 5 && line)
			f[n++] = strsep(&line, "\t");
		if (n == 2 && strcmp(f[0], "error") == 0) {
			snprintf(err, errlen, "%s: the daemon says: %s", path, f[1]);
			return -EIO;
		}
		if (n != 5)
			continue; /* a line of a newer daemon's making: skip it */
		if (strcmp(current, f[0]) != 0) {
			fprintf(out, "%s%s\n  %-24s %s\n", current[0] ? "\n" : "", f[0], "role",
				f[1]);
			snprintf(current, sizeof(current), "%s", f[0]);
		}
		for (char *c = f[2]; *c; c++)
			if (*c == '_')
				*c = ' ';
		fprintf(out, "  %-24s ", f[2]);
		print_value(out, f[3], f[4]);
	}
	if (!current[0])
		fprintf(out, "no services\n");
	return 0;
}

int status_print(const char *socket_path, FILE *out, char *err, size_t errlen)
{
	_cleanup_free_ char *text = NULL;
	int r = read_answer(socket_path, &text, err, errlen);

	if (r < 0)
		return r;
	return print_rows(text, out, socket_path, err, errlen);
}
