/*
 * witness.c - see witness.h: the etcd witness over the gRPC gateway, with
 * libcurl's multi interface on the daemon's libevent loop (libcurl's
 * "hiperfifo" way: curl tells which sockets and timeout to watch, libevent
 * calls curl back when they are ready).
 *
 * A small state machine, stepped on every answer and on a 100 ms tick:
 *   want, no lease (or ours lapsed and etcd said so) -> grant
 *   want, lease, key not ours                          -> take (txn), again every tick
 *   want, lease, key ours                              -> keepalive every TTL/3
 *   not want, lease                                    -> revoke
 * Our belief in the lease counts from when we *sent* the request etcd
 * answered (etcd renewed it later than that, never earlier), less a margin.
 */
#include "witness.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define WITNESS_TICK_MS 100
#define WITNESS_RETRY_MS 100
#define WITNESS_MAX_BODY (64u << 10)
#define WITNESS_MAX_SOCKETS 16

enum wreq_kind { W_GRANT, W_TAKE, W_KEEPALIVE, W_REVOKE };

struct wreq {
	struct witness *w;
	enum wreq_kind kind;
	CURL *easy;
	struct curl_slist *hdrs;
	char *body;
	char *resp;
	size_t len;
	uint64_t sent_us;
	int64_t lease;
};

struct witness {
	struct event_base *base;
	CURLM *multi;
	struct event *curl_timer, *tick;
	char **urls;
	size_t n_urls, url;
	char *ca, *cert, *key_file;
	char *name, *identity, *key_b64, *value_b64;
	uint32_t ttl_s, margin_ms;
	bool want;
	int64_t lease;		 /* granted to us, 0 none */
	uint64_t lease_until_us; /* alive at least until then (less the margin) */
	bool held;		 /* the key is ours on lease */
	uint64_t next_try_us; /* the next grant or take, after a refusal or failure */
	uint64_t next_ka_us;  /* the next keepalive, held or not (a lease unrenewed expires) */
	struct wreq *inflight;
	char holder[128], err[256];
	uint64_t err_logged_us;
	uint64_t requests, last_rtt_us;
	struct event *sock_ev[WITNESS_MAX_SOCKETS]; /* curl's sockets, freed with us at the latest */
	witness_changed_fn changed;
	void *arg;
};

static void step(struct witness *w);

/* ---------- small helpers ---------- */

static char *b64_encode(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* Decodes into buf (NUL-terminated); false if it is not base64 or does not fit. */
static bool b64_decode(const char *s, char *buf, size_t size)
{
	size_t n = strlen(s);
	int got;

	if (n % 4 || n / 4 * 3 + 1 > size)
		return false;
	got = EVP_DecodeBlock((unsigned char *)buf, (const unsigned char *)s, (int)n);
	if (got < 0)
		return false;
	while (n && s[n - 1] == '=') {
		n--;
		got--;
	}
	buf[got] = 0;
	return true;
}

static void set_err(struct witness *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct witness *w, const char *fmt, ...)
{
	va_list ap;
	char now[sizeof(w->err)];

	va_start(ap, fmt);
	vsnprintf(now, sizeof(now), fmt, ap);
	va_end(ap);
	/* The first failure after a success, then one line per 10 s: a partition fails 10 times a second. */
	if (now[0] && (!w->err[0] || now_us() - w->err_logged_us > 10000000)) {
		log_warn("%s: witness: %s", w->name, now);
		w->err_logged_us = now_us();
	}
	snprintf(w->err, sizeof(w->err), "%s", now);
}

static void notify(struct witness *w)
{
	if (w->changed)
		w->changed(w->arg);
}

static struct json_object *jpath(struct json_object *o, const char *const *keys)
{
	for (; o && *keys; keys++) {
		if (json_object_is_type(o, json_type_array))
			o = json_object_array_length(o) ? json_object_array_get_idx(o, 0) : NULL;
		if (!o || !json_object_object_get_ex(o, *keys, &o))
			return NULL;
	}
	return o;
}
#define JPATH(o, ...) jpath(o, (const char *const[]){__VA_ARGS__, NULL})

/* An int64 the gateway writes as a string ("123"), or as a number. */
static int64_t jint(struct json_object *o) { return o ? json_object_get_int64(o) : 0; }

/* ---------- libcurl on libevent ---------- */

static void check_done(struct witness *w);

static void socket_ready(evutil_socket_t fd, short kind, void *arg)
{
	struct witness *w = arg;
	int running, flags = (kind & EV_READ ? CURL_CSELECT_IN : 0) |
			     (kind & EV_WRITE ? CURL_CSELECT_OUT : 0);

	curl_multi_socket_action(w->multi, fd, flags, &running);
	check_done(w);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct witness *w = userp;
	struct event *ev = socketp;
	short kind = EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) |
		     (what & CURL_POLL_OUT ? EV_WRITE : 0);
	(void)e;

	if (what == CURL_POLL_REMOVE) {
		for (size_t i = 0; ev && i < WITNESS_MAX_SOCKETS; i++)
			if (w->sock_ev[i] == ev)
				w->sock_ev[i] = NULL;
		if (ev)
			event_free(ev);
		curl_multi_assign(w->multi, s, NULL);
		return 0;
	}
	if (ev) {
		event_del(ev);
		event_assign(ev, w->base, s, kind, socket_ready, w);
	} else {
		size_t i = 0;
		while (i < WITNESS_MAX_SOCKETS && w->sock_ev[i])
			i++;
		if (i == WITNESS_MAX_SOCKETS || !(ev = event_new(w->base, s, kind, socket_ready, w)))
			return -1;
		w->sock_ev[i] = ev;
		curl_multi_assign(w->multi, s, ev);
	}
	event_add(ev, NULL);
	return 0;
}

static void curl_timeout(evutil_socket_t fd, short kind, void *arg)
{
	struct witness *w = arg;
	int running;
	(void)fd;
	(void)kind;

	curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(w);
}

static int timer_cb(CURLM *m, long ms, void *userp)
{
	struct witness *w = userp;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = ms % 1000 * 1000};
	(void)m;

	if (ms < 0)
		evtimer_del(w->curl_timer);
	else
		evtimer_add(w->curl_timer, &tv);
	return 0;
}

static size_t body_cb(char *data, size_t size, size_t n, void *arg)
{
	struct wreq *q = arg;
	size_t len = size * n;
	char *p;

	if (q->len + len > WITNESS_MAX_BODY || !(p = realloc(q->resp, q->len + len + 1)))
		return 0; /* curl fails the transfer: CURLE_WRITE_ERROR */
	memcpy(p + q->len, data, len);
	q->resp = p;
	q->len += len;
	p[q->len] = 0;
	return len;
}

static void wreq_free(struct wreq *q)
{
	if (!q)
		return;
	if (q->easy)
		curl_easy_cleanup(q->easy);
	curl_slist_free_all(q->hdrs);
	free(q->body);
	free(q->resp);
	free(q);
}

static const char *kind_path(enum wreq_kind kind)
{
	switch (kind) {
	case W_GRANT:
		return "/v3/lease/grant";
	case W_TAKE:
		return "/v3/kv/txn";
	case W_KEEPALIVE:
		return "/v3/lease/keepalive";
	case W_REVOKE:
		return "/v3/lease/revoke";
	}
	return "/";
}

static const char *kind_name(enum wreq_kind kind)
{
	static const char *const names[] = {"lease grant", "take", "keepalive", "revoke"};
	return names[kind];
}

/* Every request's deadline: a third of the TTL (so a dead member costs one keepalive), 0.2-1 s. */
static long deadline_ms(const struct witness *w)
{
	long ms = (long)w->ttl_s * 1000 / 3;
	return ms < 200 ? 200 : ms > 1000 ? 1000 : ms;
}

static CURL *easy_for(struct witness *w, struct wreq *q)
{
	char url[512];
	CURL *e = curl_easy_init();

	if (!e)
		return NULL;
	snprintf(url, sizeof(url), "%s%s", w->urls[w->url], kind_path(q->kind));
	q->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	q->hdrs = q->hdrs ? curl_slist_append(q->hdrs, "Expect:") : NULL;
	if (!q->hdrs) {
		curl_easy_cleanup(e);
		return NULL;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->hdrs);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(e, CURLOPT_PRIVATE, q);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, deadline_ms(w));
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, deadline_ms(w));
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	if (w->ca)
		curl_easy_setopt(e, CURLOPT_CAINFO, w->ca);
	if (w->cert)
		curl_easy_setopt(e, CURLOPT_SSLCERT, w->cert);
	if (w->key_file)
		curl_easy_setopt(e, CURLOPT_SSLKEY, w->key_file);
	return e;
}

static void send_req(struct witness *w, enum wreq_kind kind, char *body, int64_t lease)
{
	struct wreq *q = calloc(1, sizeof(*q));

	if (!q || !body) {
		free(q);
		free(body);
		set_err(w, "out of memory");
		return;
	}
	*q = (struct wreq){.w = w, .kind = kind, .body = body, .lease = lease, .sent_us = now_us()};
	q->easy = easy_for(w, q);
	if (!q->easy || curl_multi_add_handle(w->multi, q->easy) != CURLM_OK) {
		set_err(w, "cannot start a request to %s", w->urls[w->url]);
		wreq_free(q);
		return;
	}
	w->inflight = q;
}

/* ---------- the requests ---------- */

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, f);
	if (vasprintf(&s, f, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

static void send_grant(struct witness *w)
{
	send_req(w, W_GRANT, fmt("{\"TTL\":%u}", w->ttl_s), 0);
}

static void send_keepalive(struct witness *w)
{
	send_req(w, W_KEEPALIVE, fmt("{\"ID\":\"%" PRId64 "\"}", w->lease), w->lease);
}

static void send_revoke(struct witness *w, int64_t lease)
{
	send_req(w, W_REVOKE, fmt("{\"ID\":\"%" PRId64 "\"}", lease), lease);
}

/* Absent: put with our lease; else if it holds our name: put; else read it. One round trip. */
static void send_take(struct witness *w)
{
	const char *k = w->key_b64, *v = w->value_b64;

	send_req(w, W_TAKE,
		 fmt("{\"compare\":[{\"key\":\"%s\",\"target\":\"CREATE\",\"result\":\"EQUAL\","
		     "\"createRevision\":\"0\"}],"
		     "\"success\":[{\"requestPut\":{\"key\":\"%s\",\"value\":\"%s\",\"lease\":\"%" PRId64
		     "\"}}],"
		     "\"failure\":[{\"requestTxn\":{"
		     "\"compare\":[{\"key\":\"%s\",\"target\":\"VALUE\",\"result\":\"EQUAL\","
		     "\"value\":\"%s\"}],"
		     "\"success\":[{\"requestPut\":{\"key\":\"%s\",\"value\":\"%s\",\"lease\":\"%" PRId64
		     "\"}}],"
		     "\"failure\":[{\"requestRange\":{\"key\":\"%s\"}}]}}]}",
		     k, k, v, w->lease, k, v, k, v, w->lease, k),
		 w->lease);
}

/* ---------- their answers ---------- */

static void lease_lost(struct witness *w, const char *why)
{
	bool was = w->held;

	w->lease = 0;
	w->held = false;
	w->lease_until_us = 0;
	if (was)
		log_warn("%s: witness: lost the key: %s", w->name, why);
}

static void took(struct witness *w, struct json_object *j)
{
	struct json_object *range;
	const char *v;

	if (json_object_get_boolean(JPATH(j, "succeeded")) ||
	    json_object_get_boolean(JPATH(j, "responses", "response_txn", "succeeded"))) {
		if (!w->held)
			log_info("%s: witness: holding " WITNESS_KEY_FMT " (lease %" PRIx64 ", %u s)",
				 w->name, w->name, (uint64_t)w->lease, w->ttl_s);
		w->held = true;
		w->holder[0] = 0;
		return;
	}
	range = JPATH(j, "responses", "response_txn", "responses", "response_range", "kvs", "value");
	v = range ? json_object_get_string(range) : NULL;
	if (!v || !b64_decode(v, w->holder, sizeof(w->holder)))
		snprintf(w->holder, sizeof(w->holder), "?");
	w->held = false;
	w->next_try_us = now_us() + WITNESS_RETRY_MS * 1000;
}

static void answered(struct witness *w, struct wreq *q, struct json_object *j)
{
	uint64_t ttl_us;

	switch (q->kind) {
	case W_GRANT:
		w->lease = jint(JPATH(j, "ID"));
		ttl_us = jint(JPATH(j, "TTL")) * 1000000ull;
		w->lease_until_us = q->sent_us + ttl_us - w->margin_ms * 1000ull;
		w->next_ka_us = q->sent_us + ttl_us / 3;
		w->next_try_us = 0;
		break;
	case W_TAKE:
		took(w, j);
		break;
	case W_KEEPALIVE:
		ttl_us = jint(JPATH(j, "result", "TTL")) * 1000000ull;
		if (!ttl_us) {
			lease_lost(w, "etcd says our lease has expired");
			w->next_try_us = 0;
			break;
		}
		w->lease_until_us = q->sent_us + ttl_us - w->margin_ms * 1000ull;
		w->next_ka_us = q->sent_us + ttl_us / 3;
		break;
	case W_REVOKE:
		break;
	}
}

/* The gateway's errors: {"error":"...","code":N} or, from a stream, {"error":{"message":...}}. */
static const char *etcd_error(struct json_object *j)
{
	struct json_object *e = JPATH(j, "error"), *m;

	if (!e)
		return NULL;
	if (json_object_is_type(e, json_type_object) && json_object_object_get_ex(e, "message", &m))
		return json_object_get_string(m);
	return json_object_get_string(e);
}

static void complete(struct witness *w, struct wreq *q, CURLcode res)
{
	long status = 0;
	struct json_object *j = NULL;
	const char *why = NULL;

	curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
	if (res == CURLE_OK)
		j = json_tokener_parse(q->resp ? q->resp : "");
	if (res != CURLE_OK)
		why = curl_easy_strerror(res);
	else if (!j)
		why = "answer is not JSON";
	else if ((why = etcd_error(j)) || status != 200)
		why = why ? why : "HTTP error";
	if (why) {
		set_err(w, "%s at %s failed: %s (HTTP %ld)", kind_name(q->kind), w->urls[w->url], why,
			status);
		/* "lease not found" is an answer, not a failure of the member */
		if (strstr(why, "lease not found") && q->lease == w->lease)
			lease_lost(w, why);
		else
			w->url = (w->url + 1) % w->n_urls;
		w->next_try_us = now_us() + WITNESS_RETRY_MS * 1000;
		if (q->kind == W_KEEPALIVE)
			w->next_ka_us = w->next_try_us;
	} else {
		w->err[0] = 0;
		w->requests++;
		w->last_rtt_us = now_us() - q->sent_us;
		if (q->lease == w->lease || q->kind == W_GRANT)
			answered(w, q, j);
	}
	json_object_put(j);
}

static void check_done(struct witness *w)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(w->multi, &left))) {
		struct wreq *q = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&q);
		curl_multi_remove_handle(w->multi, msg->easy_handle);
		if (q == w->inflight)
			w->inflight = NULL;
		complete(w, q, msg->data.result);
		wreq_free(q);
		step(w);
		notify(w);
	}
}

/* ---------- the state machine ---------- */

static void step(struct witness *w)
{
	uint64_t now = now_us();

	if (w->inflight)
		return;
	if (w->held && now >= w->lease_until_us && w->lease_until_us) {
		/* Not heard for a whole lease: it may be gone; keep asking until etcd says. */
		log_warn("%s: witness: no keepalive answered for the lease's %u s: we no longer "
			 "count on the key",
			 w->name, w->ttl_s);
		w->lease_until_us = 0;
		notify(w);
	}
	if (!w->want) {
		if (w->lease) {
			int64_t lease = w->lease;
			w->lease = 0;
			w->held = false;
			w->lease_until_us = 0;
			send_revoke(w, lease);
		}
		return;
	}
	if (!w->lease) {
		if (now >= w->next_try_us)
			send_grant(w);
	} else if (now >= w->next_ka_us) {
		send_keepalive(w);
	} else if (!w->held && now >= w->next_try_us) {
		send_take(w);
	}
}

static void tick(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	step(arg);
}

/* ---------- the interface ---------- */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int witness_new(struct event_base *base, const struct urllist *urls, const char *name,
		const char *identity, uint32_t ttl_ms, uint32_t margin_ms,
		const struct witness_tls *tls, witness_changed_fn changed, void *arg,
		struct witness **out)
{
	struct timeval tv = {.tv_sec = 0, .tv_usec = WITNESS_TICK_MS * 1000};
	_cleanup_free_ char *key = fmt(WITNESS_KEY_FMT, name);
	struct witness *w;

	if (!urls->n || !key)
		return -EINVAL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -ENOMEM;
	w = calloc(1, sizeof(*w));
	if (!w) {
		curl_global_cleanup();
		return -ENOMEM;
	}
	*w = (struct witness){.base = base,
			      .ttl_s = (ttl_ms + 999) / 1000,
			      .margin_ms = margin_ms,
			      .n_urls = urls->n,
			      .changed = changed,
			      .arg = arg};
	w->urls = urls->v;
	w->name = strdup(name);
	w->identity = strdup(identity);
	w->key_b64 = b64_encode(key, strlen(key));
	w->value_b64 = b64_encode(identity, strlen(identity));
	w->ca = tls ? dup_or_null(tls->ca) : NULL;
	w->cert = tls ? dup_or_null(tls->cert) : NULL;
	w->key_file = tls ? dup_or_null(tls->key) : NULL;
	w->multi = curl_multi_init();
	w->curl_timer = evtimer_new(base, curl_timeout, w);
	w->tick = event_new(base, -1, EV_PERSIST, tick, w);
	if (!w->name || !w->identity || !w->key_b64 || !w->value_b64 || !w->multi ||
	    !w->curl_timer || !w->tick) {
		witness_free(w);
		return -ENOMEM;
	}
	curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
	curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
	event_add(w->tick, &tv);
	*out = w;
	return 0;
}

void witness_free(struct witness *w)
{
	if (!w)
		return;
	if (w->inflight) {
		curl_multi_remove_handle(w->multi, w->inflight->easy);
		wreq_free(w->inflight);
	}
	if (w->multi)
		curl_multi_cleanup(w->multi);
	for (size_t i = 0; i < WITNESS_MAX_SOCKETS; i++)
		if (w->sock_ev[i])
			event_free(w->sock_ev[i]);
	if (w->curl_timer)
		event_free(w->curl_timer);
	if (w->tick)
		event_free(w->tick);
	free(w->name);
	free(w->identity);
	free(w->key_b64);
	free(w->value_b64);
	free(w->ca);
	free(w->cert);
	free(w->key_file);
	free(w);
	curl_global_cleanup();
}

void witness_want(struct witness *w, bool want)
{
	if (!w || w->want == want)
		return;
	w->want = want;
	w->next_try_us = 0;
	step(w);
}

bool witness_holds(const struct witness *w, uint64_t now)
{
	return w && w->held && now < w->lease_until_us;
}

uint64_t witness_until(const struct witness *w) { return w && w->held ? w->lease_until_us : 0; }
const char *witness_holder(const struct witness *w) { return w ? w->holder : ""; }
const char *witness_error(const struct witness *w) { return w ? w->err : ""; }
uint64_t witness_requests(const struct witness *w) { return w ? w->requests : 0; }
uint64_t witness_last_rtt_us(const struct witness *w) { return w ? w->last_rtt_us : 0; }
