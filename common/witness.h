/*
 * witness.h - the etcd witness: one key per service,
 * /checksync/NAME/owner, held under an etcd lease by the host that serves.
 *
 * Two hosts cannot tell a dead peer from a partition; a third vote can. The
 * serving host holds the key under a lease it keeps alive; the backup takes
 * over only once it has taken the key itself, which etcd allows only when
 * the key is absent (the primary's lease has expired, or was revoked) or
 * already carries the taker's name. So the primary may keep serving
 * without its backup for as long as its lease on the key is alive (it knows
 * a lower bound of that: the time it sent its last successful keepalive
 * plus the TTL granted, less a margin), and freezes only when it has lost
 * both.
 *
 * The client speaks etcd's gRPC-gateway JSON API (POST /v3/lease/grant,
 * /v3/lease/keepalive, /v3/lease/revoke, /v3/kv/txn; keys and values in
 * base64) through libcurl's multi interface driven by the daemon's libevent
 * loop, so no call ever blocks the loop. One request is in flight at a time
 * per witness; each has a deadline (a third of the TTL, at most 1 s), and a
 * failed one moves to the next URL. The gateway's keepalive is a stream,
 * but a request whose body holds one message gets one response and the
 * stream ends: a keepalive is one POST. README says why the gateway and not
 * gRPC (measured).
 *
 * The take is one transaction: if the key is absent put it with our lease,
 * else (nested) if its value is our name put it with our lease, else read
 * it (to say who holds it).
 *
 * One writer: everything in struct witness is written by witness.c only.
 */
#pragma once

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

struct witness;
struct urllist;

/* Called after the witness's view changed (held, lost, holder seen, error). */
typedef void (*witness_changed_fn)(void *arg);

struct witness_tls {
	const char *ca, *cert, *key; /* for https:// URLs: etcd's CA, our client certificate */
};

/*
 * A witness for service NAME on the etcd at URLS, taking the key as IDENTITY
 * (the value written) under a lease of ttl_ms (whole seconds). margin_ms is
 * taken off what we believe of the lease, for the caller's timer to act
 * before etcd does. Nothing is sent until witness_want(w, true).
 */
int witness_new(struct event_base *base, const struct urllist *urls, const char *name,
		const char *identity, uint32_t ttl_ms, uint32_t margin_ms,
		const struct witness_tls *tls, witness_changed_fn changed, void *arg,
		struct witness **out);
/* Revokes our lease if we hold one (best effort, bounded by a short deadline), frees all. */
void witness_free(struct witness *w);

/* Take and keep the key (true), or let it go: revoke our lease (false). */
void witness_want(struct witness *w, bool want);

/* We hold the key, and our lease on it is alive until at least witness_until(). */
bool witness_holds(const struct witness *w, uint64_t now);
/* Until when (now_us() clock) our lease is known alive; 0 if we hold nothing. */
uint64_t witness_until(const struct witness *w);
/* Who holds the key when we do not ("" unknown), and the last error ("" none). */
const char *witness_holder(const struct witness *w);
const char *witness_error(const struct witness *w);
/* Round trips of successful requests, for status: count and the last one (us). */
uint64_t witness_requests(const struct witness *w);
uint64_t witness_last_rtt_us(const struct witness *w);

/* The key of service NAME (tests and messages). */
#define WITNESS_KEY_FMT "/checksync/%s/owner"
