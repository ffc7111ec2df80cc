/*
 * peer.h - one connection from a primary, after its TLS handshake:
 * HELLO, then epochs in and ACKs out, heartbeats both ways.
 *
 * The primary must name a service we have in its HELLO before anything
 * else; we answer with our own HELLO, which is the primary's proof that its
 * certificate was accepted (wire.h). An epoch is received into a
 * store_epoch (store.h) and, in parallel, packed into the record the
 * journal will write; on a verified COMMIT the store applies it, the
 * journal writes it, and the ACK goes out only once that write is durable.
 *
 * A peer is closed, never freed, from inside its own callbacks: closing
 * detaches it from its service at once (discarding an epoch under way),
 * sends ERROR if there is a reason to give, and frees it once the output
 * has drained. So a caller may use it until it returns to the loop.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

struct bufferevent;
struct daemon;
struct peer;

/* Take over a connection whose handshake succeeded (tls.h's established callback). */
void peer_accept(struct daemon *d, struct bufferevent *bev, const char *peer);

/* Close, sending ERROR(code, reason) first unless reason is NULL. */
void peer_close(struct peer *s, enum wire_error_code code, const char *reason);

/* Free every peer at once (daemon shutdown): no ERROR, no flush. */
void peer_free_all(struct daemon *d);

/* Reading is held back while the journal catches up: silence is then ours, not the primary's. */
bool peer_read_paused(const struct peer *s);

/* Has the primary sent bytes we have not read yet? Then it is not silent: read them first. */
bool peer_has_unread(const struct peer *s);

/* An epoch begun and not yet committed: its number and the pages received so far. */
bool peer_receiving(const struct peer *s, uint64_t *epoch, uint64_t *pages);
