/*
 * listener.h - what backupd lets in, and how loudly it says no.
 *
 * Anyone who can reach the listen address can open connections, so every
 * resource they cost is bounded here: handshakes under way (in all and per
 * source address), established connections (the same), and the log lines a
 * flood of refusals or accept() failures may write. The TLS listener
 * (tls.h) enforces the handshake limits and its own total handshake
 * deadline and backs off after accept() errors; this policy gives it the
 * numbers, counts established connections, and rate-limits the log.
 *
 * The numbers fit the unit's LimitNOFILE= (systemd/checksync-backup.service):
 * LISTENER_MAX_PENDING + the established limit + a few files per service
 * stay well below it for up to 64 services.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tls_callbacks;
struct tls_listener;

#define LISTENER_MAX_PENDING 256	/* TLS handshakes under way, in all */
#define LISTENER_MAX_PENDING_PER_ADDR 16 /* ... from one source address */
/*
 * Refusal lines: in each window of LISTENER_LOG_WINDOW_US, one per source
 * address and reason, at most LISTENER_LOG_BURST in all; the rest are
 * counted, and the count is given with the next line written.
 */
#define LISTENER_LOG_BURST 20
#define LISTENER_LOG_WINDOW_US 10000000ull

struct conn_policy;

/* For a daemon with n_services services. 0 or -ENOMEM. */
int conn_policy_new(size_t n_services, struct conn_policy **out);
void conn_policy_free(struct conn_policy *p);

/* Give the listener our limits (call once it listens). */
void conn_policy_attach(struct conn_policy *p, struct tls_listener *l);

/*
 * An established connection from peer ("addr:port"): counts it and returns
 * true, or false (not counted) if it is one too many. Each counted one must
 * be given back with conn_policy_closed().
 */
bool conn_policy_established(struct conn_policy *p, const char *peer);
void conn_policy_closed(struct conn_policy *p, const char *peer);

/* A warning line about a refused connection or a failed accept(), rate-limited. */
void conn_policy_log(struct conn_policy *p, const char *peer, const char *reason);
