/*
 * tls.c - OpenSSL contexts for mutual TLS 1.3, and the libevent plumbing
 * that runs a handshake before anyone else sees the connection.
 *
 * A struct tls_handshake follows one connection from accept() or connect()
 * to the end of its handshake. It owns the bufferevent until then and hands
 * it over on success; on failure it turns OpenSSL's error queue and the
 * certificate verification result into one readable reason. A listener
 * keeps its handshakes in a list so that freeing it frees them.
 *
 * Session tickets and the session cache are off: every connection proves
 * its certificate afresh, and there is no resumption state to reason about.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "config.h"
#include "util.h"

struct tls_handshake {
	LIST_ENTRY(tls_handshake) link; /* in owner->handshakes */
	struct tls_listener *owner;	   /* NULL for an outgoing connection */
	struct bufferevent *bev;
	struct tls_callbacks cbs;
	char peer[TLS_PEER_MAX];
	char addr[INET6_ADDRSTRLEN + 20]; /* the peer's address without the port, for limits */
	char why[400]; /* what verify_peer() found wrong with the peer's certificate */
	struct event *deadline; /* the whole handshake's, not an inactivity timeout */
};

struct tls_listener {
	struct event_base *base;
	SSL_CTX *ctx;
	struct evconnlistener *lev;
	struct tls_callbacks cbs;
	LIST_HEAD(, tls_handshake) handshakes;
	size_t n_pending;
	struct tls_limits limits;
	struct event *resume; /* re-enables accepting after an accept error */
	int backoff_ms;
};

/*
 * The names a listening context accepts (tls_ctx_expect_peer()), hung on the
 * SSL_CTX so they live and die with it. OpenSSL hands application data to a
 * verify callback only through ex_data indexes, which are process-wide: two,
 * made once.
 */
struct peer_names {
	char **v;
	size_t n, cap;
};

static int names_idx = -1, handshake_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static void peer_names_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			    void *argp)
{
	struct peer_names *pn = ptr;

	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (!pn)
		return;
	for (size_t i = 0; i < pn->n; i++)
		free(pn->v[i]);
	free(pn->v);
	free(pn);
}

static void make_indexes(void)
{
	names_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, peer_names_free);
	handshake_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void ensure_indexes(void) { pthread_once(&idx_once, make_indexes); }

/* ---------- contexts ---------- */

/* "what: reason", taking the oldest error (the cause) and emptying the queue. */
static int ssl_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ssl_fail(char *err, size_t errlen, const char *fmt, ...)
{
	unsigned long e = ERR_get_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s: %s", what, reason ? reason : "unknown OpenSSL error");
	ERR_clear_error();
	return -EINVAL;
}

/* ---------- certificate checks ---------- */

static bool is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/*
 * No wildcards: a "*.example" certificate would let every host it covers
 * pose as the peer. OpenSSL checks SAN DNS names, and the CN only when
 * there is no DNS SAN; an address is checked against the IP SANs.
 */
#define TLS_HOSTFLAGS X509_CHECK_FLAG_NO_WILDCARDS

static bool cert_has_name(X509 *cert, const char *name)
{
	if (is_ip_literal(name))
		return X509_check_ip_asc(cert, name, 0) == 1;
	return X509_check_host(cert, name, 0, TLS_HOSTFLAGS, NULL) == 1;
}

/* "CN x, DNS:y, IP:z": what a certificate calls itself, for messages only. */
static void cert_names(X509 *cert, char *buf, size_t len)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	X509_NAME *subject = X509_get_subject_name(cert);
	int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	size_t off = 0;

	buf[0] = 0;
	if (i >= 0) {
		const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
		off += snprintf(buf, len, "CN %.*s", ASN1_STRING_length(cn),
				(const char *)ASN1_STRING_get0_data(cn));
	}
	for (int k = 0; sans && k < sk_GENERAL_NAME_num(sans) && off < len; k++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, k);
		char ip[INET6_ADDRSTRLEN] = "?";

		if (g->type == GEN_DNS)
			off += snprintf(buf + off, len - off, "%sDNS:%.*s", off ? ", " : "",
					ASN1_STRING_length(g->d.dNSName),
					(const char *)ASN1_STRING_get0_data(g->d.dNSName));
		else if (g->type == GEN_IPADD) {
			int n = ASN1_STRING_length(g->d.iPAddress);
			inet_ntop(n == 16 ? AF_INET6 : AF_INET, ASN1_STRING_get0_data(g->d.iPAddress),
				  ip, sizeof(ip));
			off += snprintf(buf + off, len - off, "%sIP:%s", off ? ", " : "", ip);
		}
	}
	GENERAL_NAMES_free(sans);
	if (!buf[0])
		snprintf(buf, len, "no names");
}

/*
 * Extended key usage, required rather than merely checked when present (as
 * OpenSSL's purpose check does): the server's certificate says serverAuth,
 * the client's clientAuth.
 */
static const char *eku_problem(X509 *cert, bool for_server)
{
	uint32_t want = for_server ? XKU_SSL_SERVER : XKU_SSL_CLIENT;

	if (!(X509_get_extension_flags(cert) & EXFLAG_XKUSAGE))
		return for_server ? "it has no extendedKeyUsage (serverAuth is required)"
				  : "it has no extendedKeyUsage (clientAuth is required)";
	if (!(X509_get_extended_key_usage(cert) & want))
		return for_server ? "its extendedKeyUsage lacks serverAuth"
				  : "its extendedKeyUsage lacks clientAuth";
	return NULL;
}

/* Our own certificate, at load: better a start-up error than every handshake failing. */
static int own_cert_check(SSL_CTX *ctx, bool server, const char *path, char *err, size_t errlen)
{
	X509 *cert = SSL_CTX_get0_certificate(ctx);
	const char *why = cert ? eku_problem(cert, server) : "no certificate";

	if (!why)
		return 0;
	snprintf(err, errlen, "certificate %s: %s; the %s side of the TLS connection needs it", path,
		 why, server ? "listening (backup)" : "connecting (primary)");
	return -EINVAL;
}

static void set_why(X509_STORE_CTX *xs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(X509_STORE_CTX *xs, const char *fmt, ...)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_handshake *h = ssl ? SSL_get_ex_data(ssl, handshake_idx) : NULL;
	va_list ap;

	if (!h || h->why[0])
		return;
	va_start(ap, fmt);
	vsnprintf(h->why, sizeof(h->why), fmt, ap);
	va_end(ap);
}

/* The name tls_connect() was told to expect, which the server's certificate lacks. */
static void expected_name_why(X509_STORE_CTX *xs, SSL *ssl, const char *names)
{
	X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
	const char *host = X509_VERIFY_PARAM_get0_host(param, 0);
	char *ip = host ? NULL : X509_VERIFY_PARAM_get1_ip_asc(param);

	set_why(xs, "the certificate names %s, not '%s'", names, host ? host : ip ? ip : "?");
	OPENSSL_free(ip);
}

static bool names_accept(const struct peer_names *pn, X509 *cert)
{
	for (size_t i = 0; i < pn->n; i++)
		if (cert_has_name(cert, pn->v[i]))
			return true;
	return false;
}

/*
 * On top of OpenSSL's chain check, for the peer's own certificate (depth
 * 0): its extended key usage, and on a listening context the names it must
 * carry (tls_ctx_expect_peer()). A certificate that fails gets the
 * handshake aborted, so its owner is never sent a byte of ours.
 */
static int verify_peer(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	X509 *cert = X509_STORE_CTX_get_current_cert(xs);
	bool server = ssl && SSL_is_server(ssl);
	const struct peer_names *pn;
	const char *why;
	char names[300];

	if (X509_STORE_CTX_get_error_depth(xs) != 0 || !cert || !ssl)
		return ok;
	cert_names(cert, names, sizeof(names));
	why = eku_problem(cert, !server);
	if (!ok) {
		int e = X509_STORE_CTX_get_error(xs);
		if (e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH)
			expected_name_why(xs, ssl, names);
		else if (e == X509_V_ERR_INVALID_PURPOSE && why)
			set_why(xs, "certificate of %s: %s", names, why);
		return 0;
	}
	if (why) {
		set_why(xs, "certificate of %s: %s", names, why);
		X509_STORE_CTX_set_error(xs, X509_V_ERR_INVALID_PURPOSE);
		return 0;
	}
	pn = server ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), names_idx) : NULL;
	if (pn && !names_accept(pn, cert)) {
		set_why(xs, "the certificate names %s, which is no configured primary", names);
		X509_STORE_CTX_set_error(xs, X509_V_ERR_HOSTNAME_MISMATCH);
		return 0;
	}
	return 1;
}

int tls_peer_is(SSL *ssl, const char *name)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);

	if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
		return -ENOENT;
	return cert_has_name(cert, name) ? 1 : 0;
}

int tls_bev_peer_is(struct bufferevent *bev, const char *name)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	return ssl ? tls_peer_is(ssl, name) : -EINVAL;
}

void tls_peer_describe(struct bufferevent *bev, char *buf, size_t len)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;

	if (cert)
		cert_names(cert, buf, len);
	else
		snprintf(buf, len, "no certificate");
}

static int ctx_setup(SSL_CTX *ctx, const char *ca, const char *cert, const char *key, char *err,
		     size_t errlen)
{
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION))
		return ssl_fail(err, errlen, "cannot require TLS 1.3");
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* Only this CA: SSL_CTX_set_default_verify_paths() is deliberately never called. */
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		return ssl_fail(err, errlen, "CA file %s", ca);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return ssl_fail(err, errlen, "certificate %s", cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return ssl_fail(err, errlen, "private key %s", key);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return ssl_fail(err, errlen, "private key %s does not match certificate %s", key,
				cert);
	return 0;
}

static SSL_CTX *ctx_new(bool server, const char *ca, const char *cert, const char *key, char *err,
			size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!ctx) {
		ssl_fail(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	if (ctx_setup(ctx, ca, cert, key, err, errlen) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL_CTX *tls_server_ctx(const char *ca, const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_new(true, ca, cert, key, err, errlen);
	STACK_OF(X509_NAME) * names;

	if (!ctx)
		return NULL;
	if (own_cert_check(ctx, true, cert, err, errlen) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* We are the server: the peer's certificate must be one for a TLS client. */
	SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_peer);
	/* Tell clients which CA we accept, so one with several certificates picks right. */
	names = SSL_load_client_CA_file(ca);
	if (!names) {
		ssl_fail(err, errlen, "CA file %s", ca);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	return ctx;
}

SSL_CTX *tls_client_ctx(const char *ca, const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_new(false, ca, cert, key, err, errlen);

	if (!ctx)
		return NULL;
	if (own_cert_check(ctx, false, cert, err, errlen) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_peer);
	return ctx;
}

int tls_ctx_expect_peer(SSL_CTX *ctx, const char *name)
{
	struct peer_names *pn;
	char **slot;

	ensure_indexes();
	pn = SSL_CTX_get_ex_data(ctx, names_idx);
	if (!pn) {
		pn = calloc(1, sizeof(*pn));
		if (!pn || SSL_CTX_set_ex_data(ctx, names_idx, pn) != 1) {
			free(pn);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < pn->n; i++)
		if (strcmp(pn->v[i], name) == 0)
			return 0;
	slot = array_push(&pn->v, &pn->n, &pn->cap, sizeof(char *));
	if (!slot)
		return -ENOMEM;
	*slot = strdup(name);
	if (!*slot) {
		pn->n--;
		return -ENOMEM;
	}
	return 0;
}

/* ---------- peer identity ---------- */

static void x509_freep(X509 **x) { X509_free(*x); }

static void openssl_freep(unsigned char **p) { OPENSSL_free(*p); }

int tls_peer_cn(SSL *ssl, char *buf, size_t len)
{
	__attribute__((cleanup(x509_freep))) X509 *cert = SSL_get1_peer_certificate(ssl);
	__attribute__((cleanup(openssl_freep))) unsigned char *utf8 = NULL;
	X509_NAME *subject;
	int i, n;

	if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
		return -ENOENT;
	subject = X509_get_subject_name(cert);
	i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	if (i < 0)
		return -ENOENT;
	n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
	if (n < 0 || memchr(utf8, 0, n))
		return -EINVAL; /* an embedded NUL would let "a\0b" pass for "a" */
	if ((size_t)n >= len)
		return -ENAMETOOLONG;
	memcpy(buf, utf8, n);
	buf[n] = 0;
	return 0;
}

int tls_bev_peer_cn(struct bufferevent *bev, char *buf, size_t len)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	return ssl ? tls_peer_cn(ssl, buf, len) : -EINVAL;
}

/* ---------- handshakes ---------- */

static void handshake_forget(struct tls_handshake *h)
{
	SSL *ssl = h->bev ? bufferevent_openssl_get_ssl(h->bev) : NULL;

	if (ssl)
		SSL_set_ex_data(ssl, handshake_idx, NULL);
}

static void handshake_free(struct tls_handshake *h)
{
	handshake_forget(h);
	if (h->deadline)
		event_free(h->deadline);
	if (h->owner) {
		h->owner->n_pending--;
		LIST_REMOVE(h, link);
	}
	if (h->bev)
		bufferevent_free(h->bev);
	free(h);
}

void tls_handshake_cancel(struct tls_handshake *h)
{
	if (h)
		handshake_free(h);
}

/*
 * The oldest real OpenSSL error (the cause), emptying the bev's list.
 * libevent hands errors back newest first, and mixes in SSL_get_error()
 * codes, which belong to no library and mean nothing to a reader.
 */
static unsigned long oldest_ssl_error(struct bufferevent *bev)
{
	unsigned long e, oldest = 0;

	while ((e = bufferevent_get_openssl_error(bev)))
		if (ERR_GET_LIB(e) != 0)
			oldest = e;
	return oldest;
}

/* OpenSSL's reason, the certificate's problem if there was one, else the socket's. */
static void describe(struct bufferevent *bev, short what, int sock_errno, char *buf, size_t len)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	unsigned long e = oldest_ssl_error(bev);
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	if (what & BEV_EVENT_TIMEOUT)
		snprintf(buf, len, "timed out");
	else if (e && verify != X509_V_OK)
		snprintf(buf, len, "%s (%s)", reason ? reason : "TLS error",
			 X509_verify_cert_error_string(verify));
	else if (e)
		snprintf(buf, len, "%s", reason ? reason : "TLS error");
	else if (sock_errno)
		snprintf(buf, len, "%s", strerror(sock_errno));
	else if (what & BEV_EVENT_EOF)
		snprintf(buf, len, "connection closed by the peer");
	else
		snprintf(buf, len, "connection closed");
}

void tls_describe_event(struct bufferevent *bev, short what, char *buf, size_t len)
{
	describe(bev, what, EVUTIL_SOCKET_ERROR(), buf, len);
}

static void handshake_succeeded(struct tls_handshake *h)
{
	struct bufferevent *bev;
	struct tls_callbacks cbs = h->cbs;
	char peer[TLS_PEER_MAX];

	handshake_forget(h);
	bev = TAKE_PTR(h->bev);
	memcpy(peer, h->peer, sizeof(peer));
	handshake_free(h);
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_set_timeouts(bev, NULL, NULL);
	/* A peer that dies mid-stream is EOF to the caller, not a TLS error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	cbs.established(bev, peer, cbs.arg);
}

static void handshake_failed(struct tls_handshake *h, short what, int sock_errno)
{
	struct tls_callbacks cbs = h->cbs;
	char peer[TLS_PEER_MAX], reason[1024];

	describe(h->bev, what, sock_errno, reason, sizeof(reason));
	if (what & BEV_EVENT_TIMEOUT)
		snprintf(reason, sizeof(reason), "TLS handshake not done within %d s",
			 TLS_HANDSHAKE_TIMEOUT_SEC);
	else if (h->why[0]) {
		size_t n = strlen(reason);
		snprintf(reason + n, sizeof(reason) - n, ": %s", h->why);
	}
	memcpy(peer, h->peer, sizeof(peer));
	handshake_free(h);
	cbs.failed(peer, reason, cbs.arg);
}

static void handshake_event(struct bufferevent *bev, short what, void *arg)
{
	int sock_errno = EVUTIL_SOCKET_ERROR(); /* before anything can change it */

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		handshake_succeeded(arg);
	else
		handshake_failed(arg, what, sock_errno);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	handshake_failed(arg, BEV_EVENT_TIMEOUT, 0);
}

/* Takes ssl; fd may be -1 for a connection still to be made. */
static struct tls_handshake *handshake_new(struct event_base *base, SSL *ssl, int fd,
					   enum bufferevent_ssl_state state, const char *peer,
					   const struct tls_callbacks *cbs)
{
	struct timeval tv = {.tv_sec = TLS_HANDSHAKE_TIMEOUT_SEC};
	struct tls_handshake *h = calloc(1, sizeof(*h));

	if (!h) {
		SSL_free(ssl);
		return NULL;
	}
	ensure_indexes();
	SSL_set_ex_data(ssl, handshake_idx, h); /* for verify_peer()'s reason */
	/* On failure libevent may or may not have freed ssl; leaking it beats a double free. */
	h->bev = bufferevent_openssl_socket_new(base, fd, ssl, state, BEV_OPT_CLOSE_ON_FREE);
	if (!h->bev) {
		free(h);
		return NULL;
	}
	h->cbs = *cbs;
	snprintf(h->peer, sizeof(h->peer), "%s", peer);
	/*
	 * One deadline for the whole handshake: a peer trickling a byte every few
	 * seconds would reset an inactivity timeout for ever.
	 */
	h->deadline = evtimer_new(base, on_deadline, h);
	if (!h->deadline || evtimer_add(h->deadline, &tv) < 0) {
		handshake_free(h);
		return NULL;
	}
	bufferevent_setcb(h->bev, NULL, NULL, handshake_event, h);
	bufferevent_enable(h->bev, EV_READ | EV_WRITE);
	return h;
}

/* ---------- addresses ---------- */

static int resolve(const char *hostport, bool passive, struct addrinfo **out, char *err,
		   size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
	struct hostport hp;
	const char *why;
	char port[8];
	int r;

	if (hostport_parse(hostport, passive, &hp, &why) < 0) {
		snprintf(err, errlen, "address '%s': expected %s", hostport, why);
		return -EINVAL;
	}
	snprintf(port, sizeof(port), "%u", hp.port);
	r = getaddrinfo(hp.host, port, &hints, out);
	if (r != 0) {
		snprintf(err, errlen, "address '%s': %s", hostport,
			 r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
		return -EADDRNOTAVAIL;
	}
	return 0;
}

static void addrinfo_freep(struct addrinfo **ai)
{
	if (*ai)
		freeaddrinfo(*ai);
}

static void format_peer(const struct sockaddr *sa, socklen_t salen, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN + 20], port[8]; /* numeric, with room for a %scope */

	if (getnameinfo(sa, salen, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(buf, len, "unknown peer");
	else if (sa->sa_family == AF_INET6)
		snprintf(buf, len, "[%s]:%s", host, port);
	else
		snprintf(buf, len, "%s:%s", host, port);
}

/* ---------- listening ---------- */

static void format_addr(const struct sockaddr *sa, socklen_t salen, char *buf, size_t len)
{
	if (getnameinfo(sa, salen, buf, len, NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(buf, len, "?");
}

static size_t pending_from(const struct tls_listener *l, const char *addr)
{
	const struct tls_handshake *h;
	size_t n = 0;

	LIST_FOREACH(h, &l->handshakes, link)
		n += strcmp(h->addr, addr) == 0;
	return n;
}

/* NULL, or why a new connection from addr may not start a handshake now. */
static const char *over_limit(const struct tls_listener *l, const char *addr)
{
	if (l->limits.max_pending && l->n_pending >= l->limits.max_pending)
		return "too many TLS handshakes under way";
	if (l->limits.max_pending_per_addr &&
	    pending_from(l, addr) >= l->limits.max_pending_per_addr)
		return "too many TLS handshakes under way from this address";
	if (l->limits.admit && !l->limits.admit(addr, l->limits.arg))
		return "too many connections from this address";
	return NULL;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	struct tls_listener *l = arg;
	struct tls_handshake *h;
	char peer[TLS_PEER_MAX], addr[sizeof(h->addr)];
	const char *why;
	SSL *ssl;

	(void)lev;
	l->backoff_ms = 0; /* accept works again */
	format_peer(sa, salen, peer, sizeof(peer));
	format_addr(sa, salen, addr, sizeof(addr));
	why = over_limit(l, addr);
	if (why) {
		close(fd); /* before a byte of TLS: it costs us nothing more */
		if (l->cbs.refused)
			l->cbs.refused(peer, why, l->cbs.arg);
		return;
	}
	ssl = SSL_new(l->ctx);
	h = ssl ? handshake_new(l->base, ssl, fd, BUFFEREVENT_SSL_ACCEPTING, peer, &l->cbs) : NULL;
	if (!h) {
		close(fd);
		l->cbs.failed(peer, "out of memory", l->cbs.arg);
		return;
	}
	snprintf(h->addr, sizeof(h->addr), "%s", addr);
	h->owner = l;
	l->n_pending++;
	LIST_INSERT_HEAD(&l->handshakes, h, link);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct tls_listener *l = arg;

	(void)fd, (void)what;
	evconnlistener_enable(l->lev);
}

/*
 * accept() failed, most likely for want of descriptors (EMFILE, ENFILE) or
 * memory: trying again at once would fail again, in a loop that eats the CPU
 * and fills the log. Stop accepting for a while, longer each time in a row
 * (up to TLS_ACCEPT_BACKOFF_MAX_MS); the caller rate-limits its log line.
 */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct tls_listener *l = arg;
	int e = EVUTIL_SOCKET_ERROR();
	struct timeval tv;
	char reason[256];

	(void)lev;
	if (e == EAGAIN || e == EINTR || e == ECONNABORTED)
		return; /* the peer gave up before we got to it: nothing to back off from */
	l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : TLS_ACCEPT_BACKOFF_MS;
	if (l->backoff_ms > TLS_ACCEPT_BACKOFF_MAX_MS)
		l->backoff_ms = TLS_ACCEPT_BACKOFF_MAX_MS;
	tv = (struct timeval){.tv_sec = l->backoff_ms / 1000, .tv_usec = l->backoff_ms % 1000 * 1000};
	evconnlistener_disable(l->lev);
	if (l->resume)
		evtimer_add(l->resume, &tv);
	snprintf(reason, sizeof(reason), "accept: %s; not accepting for %d ms", strerror(e),
		 l->backoff_ms);
	if (l->cbs.accept_error)
		l->cbs.accept_error(e, reason, l->cbs.arg);
	else
		l->cbs.failed("listener", reason, l->cbs.arg);
}

void tls_listener_set_limits(struct tls_listener *l, const struct tls_limits *limits)
{
	l->limits = *limits;
}

size_t tls_listener_pending(const struct tls_listener *l) { return l->n_pending; }

int tls_listen(struct event_base *base, SSL_CTX *ctx, const char *hostport,
	       const struct tls_callbacks *cbs, struct tls_listener **out, char *err, size_t errlen)
{
	__attribute__((cleanup(addrinfo_freep))) struct addrinfo *ai = NULL;
	_cleanup_free_ struct tls_listener *l = NULL;
	int r;

	r = resolve(hostport, true, &ai, err, errlen);
	if (r < 0)
		return r;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	*l = (struct tls_listener){.base = base, .ctx = ctx, .cbs = *cbs};
	l->lev = evconnlistener_new_bind(
	    base, on_accept, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
	    64, ai->ai_addr, ai->ai_addrlen);
	if (!l->lev) {
		r = errno ? -errno : -EADDRNOTAVAIL;
		snprintf(err, errlen, "cannot listen on %s: %s", hostport, strerror(-r));
		return r;
	}
	evconnlistener_set_error_cb(l->lev, on_accept_error);
	l->resume = evtimer_new(base, on_resume, l);
	if (!l->resume) {
		evconnlistener_free(l->lev);
		return -ENOMEM;
	}
	*out = TAKE_PTR(l);
	return 0;
}

void tls_listener_free(struct tls_listener *l)
{
	if (!l)
		return;
	while (!LIST_EMPTY(&l->handshakes))
		handshake_free(LIST_FIRST(&l->handshakes));
	if (l->resume)
		event_free(l->resume);
	evconnlistener_free(l->lev);
	free(l);
}

int tls_listener_port(struct tls_listener *l)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(evconnlistener_get_fd(l->lev), (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* ---------- connecting ---------- */

/* The server's certificate must name peer_name: as an IP SAN if it is an address. */
static int ssl_expect_name(SSL *ssl, const char *peer_name)
{
	X509_VERIFY_PARAM *param = SSL_get0_param(ssl);

	if (is_ip_literal(peer_name))
		return X509_VERIFY_PARAM_set1_ip_asc(param, peer_name) == 1 ? 0 : -EINVAL;
	SSL_set_hostflags(ssl, TLS_HOSTFLAGS);
	if (SSL_set1_host(ssl, peer_name) != 1)
		return -EINVAL;
	return SSL_set_tlsext_host_name(ssl, peer_name) == 1 ? 0 : -EINVAL;
}

int tls_connect(struct event_base *base, SSL_CTX *ctx, const char *hostport, const char *peer_name,
		const struct tls_callbacks *cbs, struct tls_handshake **out, char *err,
		size_t errlen)
{
	__attribute__((cleanup(addrinfo_freep))) struct addrinfo *ai = NULL;
	struct tls_handshake *h;
	SSL *ssl;
	int r;

	r = resolve(hostport, false, &ai, err, errlen);
	if (r < 0)
		return r;
	ssl = SSL_new(ctx);
	if (!ssl)
		return -ENOMEM;
	if (peer_name && ssl_expect_name(ssl, peer_name) < 0) {
		SSL_free(ssl);
		return ssl_fail(err, errlen, "peer name '%s'", peer_name);
	}
	h = handshake_new(base, ssl, -1, BUFFEREVENT_SSL_CONNECTING, hostport, cbs);
	if (!h)
		return -ENOMEM;
	if (bufferevent_socket_connect(h->bev, ai->ai_addr, ai->ai_addrlen) < 0) {
		r = errno ? -errno : -ECONNREFUSED;
		snprintf(err, errlen, "cannot connect to %s: %s", hostport, strerror(-r));
		handshake_free(h);
		return r;
	}
	if (out)
		*out = h;
	return 0;
}
