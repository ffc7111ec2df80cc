/*
 * control.c - see control.h.
 */
#include <stdio.h>
#include <sys/queue.h>

#include "control.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "log.h"
#include "util.h"

struct control_request {
	LIST_ENTRY(control_request) link;
	struct control_server *server;
	struct bufferevent *bev; /* NULL once the client has gone */
	bool asked, answered;
};

struct control_server {
	struct event_base *base;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct evconnlistener *lev;
	control_fn fn;
	void *userdata;
	LIST_HEAD(, control_request) requests;
};

static void request_free(struct control_request *q)
{
	LIST_REMOVE(q, link);
	if (q->bev)
		bufferevent_free(q->bev);
	free(q);
}

/* The client has gone: a request not yet answered lives on until it is. */
static void client_gone(struct control_request *q)
{
	if (q->bev) {
		bufferevent_free(q->bev);
		q->bev = NULL;
	}
	if (q->answered || !q->asked)
		request_free(q);
}

static void on_written(struct bufferevent *bev, void *arg)
{
	struct control_request *q = arg;

	(void)bev;
	if (q->answered)
		request_free(q);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev, (void)what;
	client_gone(arg);
}

static void vline(struct control_request *q, const char *head, const char *fmt, va_list ap)
{
	char text[CONTROL_MAX_LINE];

	vsnprintf(text, sizeof(text), fmt, ap);
	text[strcspn(text, "\n")] = 0;
	if (q->bev)
		evbuffer_add_printf(bufferevent_get_output(q->bev), "%s %s\n", head, text);
}

void control_progress(struct control_request *q, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline(q, "-", fmt, ap);
	va_end(ap);
}

void control_reply(struct control_request *q, bool ok, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline(q, ok ? "ok" : "error", fmt, ap);
	va_end(ap);
	q->answered = true;
	if (!q->bev || evbuffer_get_length(bufferevent_get_output(q->bev)) == 0)
		request_free(q);
	/* else on_written frees it once the answer is out */
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct control_request *q = arg;
	char *words[CONTROL_MAX_WORDS + 1], *save = NULL;
	int n = 0;
	_cleanup_free_ char *line = evbuffer_readln(bufferevent_get_input(bev), NULL,
						    EVBUFFER_EOL_LF);

	if (!line) {
		if (evbuffer_get_length(bufferevent_get_input(bev)) > CONTROL_MAX_LINE)
			control_reply(q, false, "command line longer than %d bytes", CONTROL_MAX_LINE);
		return;
	}
	bufferevent_disable(bev, EV_READ);
	for (char *w = strtok_r(line, " \t", &save); w && n < CONTROL_MAX_WORDS;
	     w = strtok_r(NULL, " \t", &save))
		words[n++] = w;
	words[n] = NULL;
	if (n == 0) {
		control_reply(q, false, "empty command");
		return;
	}
	q->asked = true;
	q->server->fn(q, n, words, q->server->userdata);
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	struct control_server *srv = arg;
	struct timeval tv = {.tv_sec = CONTROL_CLIENT_TIMEOUT_SEC};
	struct control_request *q = calloc(1, sizeof(*q));

	(void)lev, (void)sa, (void)salen;
	if (!q || !(q->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE))) {
		close(fd);
		free(q);
		return;
	}
	q->server = srv;
	LIST_INSERT_HEAD(&srv->requests, q, link);
	bufferevent_setcb(q->bev, on_read, on_written, on_event, q);
	bufferevent_set_timeouts(q->bev, &tv, NULL);
	bufferevent_enable(q->bev, EV_READ | EV_WRITE);
}

static int control_path(const char *status_socket, char *buf, size_t len, char *err, size_t errlen)
{
	if ((size_t)snprintf(buf, len, "%s%s", status_socket, CONTROL_SUFFIX) >= len) {
		snprintf(err, errlen, "control socket %s%s: path longer than %zu bytes",
			 status_socket, CONTROL_SUFFIX, len - 1);
		return -ENAMETOOLONG;
	}
	return 0;
}

int control_server_new(struct event_base *base, const char *status_socket, control_fn fn,
		       void *userdata, struct control_server **out, char *err, size_t errlen)
{
	struct control_server *srv = calloc(1, sizeof(*srv));
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	_cleanup_close_ int fd = -1;
	int r;

	if (!srv)
		return -ENOMEM;
	*srv = (struct control_server){.base = base, .fn = fn, .userdata = userdata};
	r = control_path(status_socket, srv->path, sizeof(srv->path), err, errlen);
	if (r < 0) {
		free(srv);
		return r;
	}
	strcpy(sun.sun_path, srv->path);
	/* The status socket was claimed first: a live daemon would have been found there. */
	(void)unlink(srv->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(srv->path, 0600) < 0 || listen(fd, 16) < 0) {
		r = -errno;
		snprintf(err, errlen, "control socket %s: %s", srv->path, strerror(-r));
		free(srv);
		return r;
	}
	srv->lev = evconnlistener_new(base, on_accept, srv,
				      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!srv->lev) {
		unlink(srv->path);
		free(srv);
		return -ENOMEM;
	}
	TAKE_FD(fd);
	*out = srv;
	return 0;
}

void control_server_free(struct control_server *s)
{
	if (!s)
		return;
	while (!LIST_EMPTY(&s->requests))
		request_free(LIST_FIRST(&s->requests));
	evconnlistener_free(s->lev);
	unlink(s->path);
	free(s);
}

/* ---------- the client ---------- */

static int print_answer(char *text, FILE *out)
{
	for (char *line = text, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		if (strncmp(line, "- ", 2) == 0) {
			fprintf(out, "%s\n", line + 2);
		} else if (strncmp(line, "ok", 2) == 0) {
			if (line[2] == ' ' && line[3])
				fprintf(out, "%s\n", line + 3);
			return 0;
		} else if (strncmp(line, "error ", 6) == 0) {
			log_error("%s", line + 6);
			return 1;
		}
	}
	log_error("the daemon closed the connection without an answer");
	return 1;
}

int control_send(const char *status_socket, int argc, char *const argv[], FILE *out, char *err,
		 size_t errlen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char line[CONTROL_MAX_LINE + 1], buf[65536];
	_cleanup_close_ int fd = -1;
	size_t used = 0, len = 0;
	int r;

	r = control_path(status_socket, sun.sun_path, sizeof(sun.sun_path), err, errlen);
	if (r < 0)
		return r;
	for (int i = 0; i < argc; i++)
		used += snprintf(line + used, sizeof(line) - used, "%s%s", i ? " " : "", argv[i]);
	if (used + 1 >= sizeof(line)) {
		snprintf(err, errlen, "command longer than %d bytes", CONTROL_MAX_LINE);
		return -E2BIG;
	}
	line[used++] = '\n';
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    write(fd, line, used) != (ssize_t)used) {
		r = -errno;
		snprintf(err, errlen, "cannot reach the daemon at %s: %s", sun.sun_path,
			 strerror(-r));
		return r;
	}
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, CONTROL_CLIENT_TIMEOUT_SEC * 1000) == 0) {
			snprintf(err, errlen, "%s: no answer within %d s", sun.sun_path,
				 CONTROL_CLIENT_TIMEOUT_SEC);
			return -ETIMEDOUT;
		}
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(err, errlen, "%s: %s", sun.sun_path, strerror(-r));
			return r;
		}
		if (n == 0 || (len += n) == sizeof(buf) - 1)
			break;
	}
	buf[len] = 0;
	return print_answer(buf, out);
}
