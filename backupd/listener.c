/*
 * listener.c - see listener.h.
 *
 * Established connections are counted per source address in a small array:
 * there are at most a few per service, so a linear search is the simplest
 * thing that is fast enough. The log limit is a fixed window: a line is
 * written if its address and reason have not been written in this window
 * and the window has room left (so an operator fixing a certificate sees
 * each new reason at once, and a flood costs a bounded number of lines);
 * the rest are counted, and the count is said with the next line written.
 */
#include "listener.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tls.h"
#include "util.h"

struct addr_count {
	char addr[TLS_PEER_MAX];
	size_t n;
};

struct conn_policy {
	size_t max_established, max_established_per_addr;
	size_t established;
	struct addr_count *counts;
	size_t n_counts, cap_counts;

	uint64_t window_start_us;
	uint64_t logged[LISTENER_LOG_BURST]; /* hashes of address + reason written this window */
	unsigned lines_in_window;
	uint64_t suppressed;
};

int conn_policy_new(size_t n_services, struct conn_policy **out)
{
	struct conn_policy *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	/* One connection per service from its primary, and its successor while the old one closes. */
	p->max_established_per_addr = 2 * n_services + 2;
	p->max_established = 4 * n_services + 16;
	*out = p;
	return 0;
}

void conn_policy_free(struct conn_policy *p)
{
	if (!p)
		return;
	free(p->counts);
	free(p);
}

/* "10.0.0.1:7000" -> "10.0.0.1", "[fe80::1%eth0]:7000" -> "fe80::1%eth0" */
static void addr_of(const char *peer, char *buf, size_t len)
{
	const char *end;

	if (peer[0] == '[' && (end = strchr(peer, ']'))) {
		snprintf(buf, len, "%.*s", (int)(end - peer - 1), peer + 1);
		return;
	}
	end = strrchr(peer, ':');
	snprintf(buf, len, "%.*s", end ? (int)(end - peer) : (int)strlen(peer), peer);
}

static struct addr_count *find(struct conn_policy *p, const char *addr)
{
	for (size_t i = 0; i < p->n_counts; i++)
		if (strcmp(p->counts[i].addr, addr) == 0)
			return &p->counts[i];
	return NULL;
}

static size_t established_from(struct conn_policy *p, const char *addr)
{
	struct addr_count *c = find(p, addr);
	return c ? c->n : 0;
}

/* tls_limits.admit: a new connection, before its handshake, on top of the established ones. */
static bool admit(const char *addr, void *arg)
{
	struct conn_policy *p = arg;

	return p->established < p->max_established &&
	       established_from(p, addr) < p->max_established_per_addr;
}

void conn_policy_attach(struct conn_policy *p, struct tls_listener *l)
{
	struct tls_limits limits = {.max_pending = LISTENER_MAX_PENDING,
				    .max_pending_per_addr = LISTENER_MAX_PENDING_PER_ADDR,
				    .admit = admit,
				    .arg = p};

	tls_listener_set_limits(l, &limits);
}

bool conn_policy_established(struct conn_policy *p, const char *peer)
{
	char addr[TLS_PEER_MAX];
	struct addr_count *c;

	addr_of(peer, addr, sizeof(addr));
	if (!admit(addr, p))
		return false;
	c = find(p, addr);
	if (!c) {
		c = array_push(&p->counts, &p->n_counts, &p->cap_counts, sizeof(*c));
		if (!c)
			return false;
		snprintf(c->addr, sizeof(c->addr), "%s", addr);
		c->n = 0;
	}
	c->n++;
	p->established++;
	return true;
}

void conn_policy_closed(struct conn_policy *p, const char *peer)
{
	char addr[TLS_PEER_MAX];
	struct addr_count *c;

	addr_of(peer, addr, sizeof(addr));
	c = find(p, addr);
	if (!c || c->n == 0)
		return;
	p->established--;
	if (--c->n == 0) /* keep the array as small as the set of connected hosts */
		*c = p->counts[--p->n_counts];
}

/* FNV-1a over the address (not the port) and the reason. */
static uint64_t line_key(const char *peer, const char *reason)
{
	char addr[TLS_PEER_MAX];
	uint64_t h = 1469598103934665603ull;

	addr_of(peer, addr, sizeof(addr));
	for (const char *s = addr; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	h = (h ^ 0xff) * 1099511628211ull;
	for (const char *s = reason; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

void conn_policy_log(struct conn_policy *p, const char *peer, const char *reason)
{
	uint64_t now = now_us(), key = line_key(peer, reason);

	if (now - p->window_start_us >= LISTENER_LOG_WINDOW_US) {
		p->window_start_us = now;
		p->lines_in_window = 0;
	}
	for (unsigned i = 0; i < p->lines_in_window; i++)
		if (p->logged[i] == key) {
			p->suppressed++;
			return;
		}
	if (p->lines_in_window >= LISTENER_LOG_BURST) {
		p->suppressed++;
		return;
	}
	p->logged[p->lines_in_window++] = key;
	if (p->suppressed)
		log_warn("refused connection from %s: %s (and %" PRIu64
			 " more refusals since the last line, not logged)",
			 peer, reason, p->suppressed);
	else
		log_warn("refused connection from %s: %s", peer, reason);
	p->suppressed = 0;
}
