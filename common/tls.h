/*
 * tls.h - mutual TLS 1.3 between the daemons, on libevent bufferevents.
 *
 * Both sides present a certificate and check the other's against one CA
 * file, and that CA only. Each side also checks the other's name (the
 * primary with tls_connect()'s peer_name, the backup with
 * tls_ctx_expect_peer()) and its extended key usage: serverAuth for the
 * listening side, clientAuth for the connecting side, required to be
 * present. Our own certificate is checked for the same at load.
 * As for the CA: the system trust store is never loaded, so a
 * certificate from any other authority, a self-signed one or none at all is
 * refused during the handshake. Nothing reaches the caller before the
 * handshake has succeeded: tls_listen() and tls_connect() hand over a
 * bufferevent only then, and report any failure with OpenSSL's reason and
 * the peer's address.
 *
 * One TLS 1.3 subtlety the protocol must respect: a client completes its
 * handshake before the server has judged the client's certificate, so the
 * connecting side must not send image data until the accepting side has
 * spoken (see wire.h).
 *
 * Callers should ignore SIGPIPE: a peer that goes away mid-write would
 * otherwise kill the daemon.
 */
#pragma once

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;

#define TLS_HANDSHAKE_TIMEOUT_SEC 10 /* the whole handshake, from accept() or connect() */
#define TLS_ACCEPT_BACKOFF_MS 100	 /* after a failed accept(), doubling while it fails */
#define TLS_ACCEPT_BACKOFF_MAX_MS 2000
#define TLS_PEER_MAX 300 /* "host:port" as configured, or "[v6addr%scope]:port" */

/*
 * TLS 1.3 only, our certificate and key, peers verified against ca alone.
 * The server demands a client certificate. NULL on failure, with err naming
 * the file and OpenSSL's reason.
 */
SSL_CTX *tls_server_ctx(const char *ca, const char *cert, const char *key, char *err,
			size_t errlen);
SSL_CTX *tls_client_ctx(const char *ca, const char *cert, const char *key, char *err,
			size_t errlen);

/*
 * A listening context accepts a client only if its certificate carries one
 * of the names given this way (SAN DNS or IP, else CN; no wildcards), checked
 * during the handshake: anyone else is refused before a byte of ours is
 * sent. Without any name, every certificate from the CA is accepted.
 * Returns 0 or -ENOMEM.
 */
int tls_ctx_expect_peer(SSL_CTX *ctx, const char *name);

/* 1 if the peer's verified certificate carries name (as above), 0 if not, -ENOENT without one. */
int tls_peer_is(SSL *ssl, const char *name);
int tls_bev_peer_is(struct bufferevent *bev, const char *name);

/* "CN x, DNS:y, IP:z" of the peer's certificate, for messages. */
void tls_peer_describe(struct bufferevent *bev, char *buf, size_t len);

/* The subject CN of the peer's verified certificate: 0, or -ENOENT, -EINVAL, -ENAMETOOLONG. */
int tls_peer_cn(SSL *ssl, char *buf, size_t len);
int tls_bev_peer_cn(struct bufferevent *bev, char *buf, size_t len);

/*
 * One line for a bufferevent event (EOF, ERROR, TIMEOUT) on a TLS
 * connection: OpenSSL's reason and the certificate's problem if any, else
 * the socket's. Call it first thing in the event callback, while errno
 * still holds the socket's error.
 */
void tls_describe_event(struct bufferevent *bev, short what, char *buf, size_t len);

struct tls_callbacks {
	/*
	 * The handshake succeeded. bev is the caller's now (it was made with
	 * BEV_OPT_CLOSE_ON_FREE; bufferevent_free() closes the connection), and
	 * has no callbacks and no timeouts: set yours. Its input may already
	 * hold the peer's first bytes, so look at it once after setting them.
	 */
	void (*established)(struct bufferevent *bev, const char *peer, void *arg);
	/* The connection or its handshake failed; it is already closed. */
	void (*failed)(const char *peer, const char *reason, void *arg);
	void *arg;
	/*
	 * Optional, listeners only. refused: a connection closed at once, before
	 * any TLS, because of tls_limits. accept_error: accept() failed (err is
	 * its errno) and the listener pauses (reason says how long); without it
	 * failed("listener", reason) is called. Both can come in floods: rate-
	 * limit what they log.
	 */
	void (*refused)(const char *peer, const char *reason, void *arg);
	void (*accept_error)(int err, const char *reason, void *arg);
};

/*
 * What a listener lets in; 0 is "no limit". Checked at accept(), before any
 * TLS; a connection over a limit is closed at once. admit, if set, is asked
 * too (addr: the peer's address without port), for the caller's own limits.
 */
struct tls_limits {
	size_t max_pending;	     /* handshakes under way, in all */
	size_t max_pending_per_addr; /* ... from one address */
	bool (*admit)(const char *addr, void *arg);
	void *arg;
};

struct tls_listener;

/*
 * Listen on hostport ("0.0.0.0:7000", "[::1]:7000"; port 0 picks a free
 * one). Every connection's handshake runs in the background; cbs report each
 * outcome. Returns 0 or -errno with err filled.
 */
int tls_listen(struct event_base *base, SSL_CTX *ctx, const char *hostport,
	       const struct tls_callbacks *cbs, struct tls_listener **out, char *err,
	       size_t errlen);

void tls_listener_set_limits(struct tls_listener *l, const struct tls_limits *limits);

/* Handshakes under way. */
size_t tls_listener_pending(const struct tls_listener *l);

/* Stop listening and drop handshakes still under way (without callbacks). */
void tls_listener_free(struct tls_listener *l);

/* The port actually bound, or -errno. */
int tls_listener_port(struct tls_listener *l);

struct tls_handshake;

/*
 * Connect to hostport and run the handshake; cbs report the outcome, once.
 * If peer_name is not NULL the server's certificate must carry it (SAN DNS
 * or IP, or CN when it has no DNS SAN; no wildcards). The host is resolved with a blocking
 * getaddrinfo(): give addresses, or names /etc/hosts answers. *out, if
 * wanted, can cancel the attempt until a callback has run. Returns 0, or
 * -errno with err filled if the attempt could not even start.
 */
int tls_connect(struct event_base *base, SSL_CTX *ctx, const char *hostport, const char *peer_name,
		const struct tls_callbacks *cbs, struct tls_handshake **out, char *err,
		size_t errlen);

/* Abandon a handshake that has not reported yet; no callback runs. */
void tls_handshake_cancel(struct tls_handshake *h);
