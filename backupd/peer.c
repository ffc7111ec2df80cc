/*
 * peer.c - see peer.h.
 *
 * Bytes are handed to the decoder as libevent has them (evbuffer_peek, no
 * pullup of a 16 MiB PAGES message), and every byte from an identified
 * primary counts as hearing from it: a primary in the middle of sending a
 * large epoch is alive even though no whole message has arrived yet.
 *
 * Back-pressure: if the journal falls more than SESSION_MAX_BACKLOG bytes
 * behind, we stop reading until it has caught up to half of that, so a
 * slow disk bounds our memory instead of growing it. The primary sees TCP
 * push back; its heartbeats wait in the socket, and failover does not count
 * that time against it (peer_read_paused()).
 *
 * The loop is never held for long by one epoch, however large: reading
 * stops after a budget of bytes and pages (on_read), and a verified epoch
 * is merged into the store in steps of SESSION_COMMIT_STEP_US from a timer
 * while reading waits (as for the journal: peer_read_paused()), so our
 * heartbeats and the ACKs go out in between.
 */
#include "peer.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <inttypes.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/queue.h>
#include <stdarg.h>

#include "daemon.h"
#include "journal.h"
#include "log.h"
#include "loopwatch.h"
#include "service.h"
#include "store.h"
#include "takeover.h"
#include "tls.h"
#include "util.h"
#include "wire.h"

#define SESSION_HELLO_TIMEOUT_SEC 10
#define SESSION_CLOSE_TIMEOUT_SEC 5
#define SESSION_MAX_BACKLOG (256ull << 20)
#define SESSION_LOG_EVERY 100 /* an info line per this many epochs; each one at debug level */
#define SESSION_COMMIT_STEP_US 5000

struct peer {
	LIST_ENTRY(peer) link; /* in d->peers */
	struct daemon *d;
	struct bufferevent *bev;
	char addr[TLS_PEER_MAX];
	uint64_t id;
	struct wire_decoder *dec;
	struct service *svc; /* after HELLO */
	bool closing, read_paused, exe_checked;
	bool committing; /* the store is merging our last epoch: no reading until it is done */
	struct event *commit_ev;
	struct {
		uint64_t epoch, base, npages, bytes;
	} commit; /* for committed() once the merge is done */
	uint64_t incarnation; /* the primary's, from its HELLO */
	bool may_replace;     /* its full epoch may replace the image of another incarnation */

	struct store_epoch *epoch; /* the epoch being received */
	msgpack_sbuffer record;	   /* the same, packed for the journal */

	struct event *hb_timer, *reaper;
	uint64_t hb_seq;
	uint64_t peer_stamp_us, peer_stamp_at_us; /* the primary's newest time_us, and when it came */
};

/* What an ACK needs to find its way back, the session having maybe gone meanwhile. */
struct pending_ack {
	struct service *svc;
	uint64_t peer_id;
	uint64_t committed_us;
};

static const char *name_of(const struct peer *s) { return s->svc ? s->svc->cfg->name : "?"; }

/* ---------- sending ---------- */

static void send_msg(struct peer *s, const struct wire_msg *m)
{
	msgpack_sbuffer sb;

	msgpack_sbuffer_init(&sb);
	if (wire_pack(&sb, m) == 0)
		bufferevent_write(s->bev, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* Our heartbeat renews the primary's lease: failover.c says until when. */
static void send_heartbeat(evutil_socket_t fd, short what, void *arg)
{
	struct peer *s = arg;
	uint64_t now = now_us();
	struct wire_msg m = {.type = WIRE_HEARTBEAT,
			     .heartbeat = {.seq = ++s->hb_seq,
					   .time_us = now,
					   .epoch = store_epoch(s->svc->store),
					   .echo_us = s->peer_stamp_us,
					   .echo_age_us = s->peer_stamp_us ? now - s->peer_stamp_at_us : 0}};

	(void)fd, (void)what;
	if (!failover_renews_lease(s->svc, now))
		return;
	send_msg(s, &m);
}

bool peer_receiving(const struct peer *s, uint64_t *epoch, uint64_t *pages)
{
	if (!s || !s->epoch)
		return false;
	*epoch = store_epoch_number(s->epoch);
	*pages = store_epoch_npages(s->epoch);
	return true;
}

/* ---------- lifetime ---------- */

static void discard_epoch(struct peer *s, const char *why)
{
	if (!s->epoch)
		return;
	log_warn("%s: torn epoch %" PRIu64 " from %s discarded (%" PRIu64 " pages received): %s",
		 name_of(s), store_epoch_number(s->epoch), s->addr, store_epoch_npages(s->epoch),
		 why);
	service_torn(s->svc);
	store_epoch_free(s->epoch);
	s->epoch = NULL;
	msgpack_sbuffer_destroy(&s->record);
	msgpack_sbuffer_init(&s->record);
}

static void commit_done(struct peer *s);

static void detach(struct peer *s, const char *why)
{
	if (s->committing) { /* verified: it goes in, whoever sent it and whatever comes next */
		store_commit_finish(s->svc->store);
		commit_done(s);
	}
	discard_epoch(s, why);
	if (s->svc)
		service_detached(s->svc, s);
	if (s->hb_timer)
		event_del(s->hb_timer);
}

static void peer_free(struct peer *s)
{
	detach(s, "the connection was freed");
	LIST_REMOVE(s, link);
	if (s->hb_timer)
		event_free(s->hb_timer);
	if (s->reaper)
		event_free(s->reaper);
	if (s->commit_ev)
		event_free(s->commit_ev);
	if (s->dec)
		wire_decoder_free(s->dec);
	msgpack_sbuffer_destroy(&s->record);
	bufferevent_free(s->bev);
	daemon_connection_closed(s->d, s->addr);
	free(s);
}

void peer_free_all(struct daemon *d)
{
	while (!LIST_EMPTY(&d->peers))
		peer_free(LIST_FIRST(&d->peers));
}

static void on_flushed(struct bufferevent *bev, void *arg)
{
	(void)bev;
	peer_free(arg);
}

static void on_closing_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev, (void)what;
	peer_free(arg);
}

/* Runs from the loop after close: free now if nothing is left to send. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct peer *s = arg;

	(void)fd, (void)what;
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		peer_free(s);
}

void peer_close(struct peer *s, enum wire_error_code code, const char *reason)
{
	struct timeval tv = {.tv_sec = SESSION_CLOSE_TIMEOUT_SEC};

	if (s->closing)
		return;
	s->closing = true;
	detach(s, reason ? reason : "the connection was closed");
	bufferevent_disable(s->bev, EV_READ);
	if (reason) {
		struct wire_msg m = {.type = WIRE_ERROR, .error = {.code = code, .reason = reason}};
		send_msg(s, &m);
	}
	bufferevent_setcb(s->bev, NULL, on_flushed, on_closing_event, s);
	bufferevent_set_timeouts(s->bev, NULL, &tv);
	bufferevent_enable(s->bev, EV_WRITE);
	event_active(s->reaper, EV_TIMEOUT, 0);
}

/* Close with a log line saying why; the peer gets the reason as ERROR. */
static int refuse(struct peer *s, enum wire_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct peer *s, enum wire_error_code code, const char *fmt, ...)
{
	char reason[WIRE_MAX_REASON];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (s->svc)
		log_warn("%s: closing the connection from %s: %s", s->svc->cfg->name, s->addr,
			 reason);
	else
		log_warn("closing the connection from %s: %s", s->addr, reason);
	peer_close(s, code, reason);
	return -EPROTO;
}

/*
 * We are not reading, so what the primary sends waits unread: that is not
 * its silence (failover.c). While we merge an epoch, only bytes that do
 * wait say so: a primary that died after its COMMIT is silent, and is
 * taken over on time.
 */
bool peer_read_paused(const struct peer *s)
{
	return s->read_paused || (s->committing && peer_has_unread(s));
}

/* Bytes the primary has sent that we have not read yet: in the kernel, in TLS, in libevent. */
bool peer_has_unread(const struct peer *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	int fd = bufferevent_getfd(s->bev), n = 0;

	if (evbuffer_get_length(bufferevent_get_input(s->bev)) || (ssl && SSL_pending(ssl) > 0))
		return true;
	return fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/* ---------- HELLO ---------- */

/* The handshake admitted any configured primary (tls_ctx_expect_peer()); this must be svc's. */
static bool peer_is_the_primary(struct peer *s, const struct service *svc)
{
	char names[300];

	if (tls_bev_peer_is(s->bev, svc->cfg->primary) == 1)
		return true;
	tls_peer_describe(s->bev, names, sizeof(names));
	(void)refuse(s, WIRE_ERR_IDENTITY, "the certificate names %s, not %s's primary '%s'", names,
		     svc->cfg->name, svc->cfg->primary);
	return false;
}

static void attach(struct peer *s, struct service *svc)
{
	uint32_t ms = svc->cfg->heartbeat_interval_ms;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = ms % 1000 * 1000};

	if (svc->peer) {
		log_warn("%s: a new connection from %s replaces the one from %s", svc->cfg->name,
			 s->addr, svc->peer->addr);
		peer_close(svc->peer, WIRE_ERR_REPLACED,
			      "replaced by a newer connection from the primary");
	}
	s->svc = svc;
	service_attached(svc, s);
	bufferevent_set_timeouts(s->bev, NULL, NULL);
	event_add(s->hb_timer, &tv);
}

/*
 * Each run of the service is an incarnation (wire.h). The image is
 * replaced by another incarnation's only when an operator asked
 * (accept-new-incarnation) or stopped the service everywhere. A primary
 * about to start a fresh run while we hold another's image has no copy of
 * it running (its service runs only under it, and dies with it): the
 * image is the only copy, and we take over at once rather than let an
 * empty service start over it. A primary already running another
 * incarnation is refused: taking over would make two copies serve.
 * Returns 0 to go on, or the code it refused (or took over) with.
 */
static enum wire_error_code judge_incarnation(struct peer *s, struct service *svc,
					      const struct wire_hello *h)
{
	uint64_t have = store_incarnation(svc->store), epoch = store_epoch(svc->store);

	s->incarnation = h->incarnation;
	if (!epoch || !have || have == h->incarnation)
		return 0;
	const char *may = failover_may_replace_image(svc);
	if (may) {
		s->may_replace = true;
		log_warn("%s: incarnation %016" PRIx64 " from %s will replace the image of %016" PRIx64
			 " (epoch %" PRIu64 "): %s",
			 svc->cfg->name, h->incarnation, s->addr, have, epoch, may);
		return 0;
	}
	if (!(h->flags & WIRE_HELLO_FRESH)) {
		(void)refuse(s, WIRE_ERR_INCARNATION_REFUSED,
			     "backup holds the image of incarnation %016" PRIx64 " (epoch %" PRIu64
			     "), this primary runs %016" PRIx64
			     "; `checksync-backupd accept-new-incarnation %s` on the backup lets it "
			     "replace the image",
			     have, epoch, h->incarnation, svc->cfg->name);
		return WIRE_ERR_INCARNATION_REFUSED;
	}
	if (svc->peer) {
		(void)refuse(s, WIRE_ERR_OTHER,
			     "the previous primary's connection is still open; ask again");
		return WIRE_ERR_OTHER;
	}
	attach(s, svc);
	failover_take_over_now(svc, "the primary restarted afresh while we hold the image of its "
				    "last incarnation, which no longer runs");
	return WIRE_ERR_TAKEN_OVER;
}

static int on_hello(struct peer *s, const struct wire_hello *h)
{
	struct service *svc;
	struct wire_msg reply = {.type = WIRE_HELLO};
	enum wire_error_code code;
	const char *why;

	if (s->svc)
		return refuse(s, WIRE_ERR_PROTOCOL, "HELLO again");
	if (h->proto_version != WIRE_PROTO_VERSION)
		return refuse(s, WIRE_ERR_PROTOCOL,
			      "primary '%s' speaks protocol version %u, we speak %u: run the same "
			      "CheckSync version on both hosts", h->service, h->proto_version,
			      WIRE_PROTO_VERSION);
	if (h->role != ROLE_PRIMARY)
		return refuse(s, WIRE_ERR_PROTOCOL, "role %s, expected primary", role_to_string(h->role));
	svc = daemon_service(s->d, h->service);
	if (!svc)
		return refuse(s, WIRE_ERR_WRONG_SERVICE, "unknown service '%s'", h->service);
	if (!peer_is_the_primary(s, svc))
		return -EPERM;
	if (svc->peer && svc->peer->committing) { /* our HELLO says the epoch we hold */
		store_commit_finish(svc->store);
		commit_done(svc->peer);
	}
	if ((code = failover_refuses_primary(svc, &why)))
		return refuse(s, code, "%s", why);
	if (!h->incarnation)
		return refuse(s, WIRE_ERR_PROTOCOL, "HELLO without an incarnation");
	if ((code = judge_incarnation(s, svc, h)))
		return code == WIRE_ERR_TAKEN_OVER ? 0 : -EPROTO;
	attach(s, svc);
	service_check_debuginfo(svc, s->addr);
	reply.hello = (struct wire_hello){
		.proto_version = WIRE_PROTO_VERSION,
		.role = ROLE_BACKUP,
		.service = svc->cfg->name,
		.boot_id = s->d->boot_id,
		.pid = getpid(),
		.incarnation = store_incarnation(svc->store),
		.flags = svc->debuginfo.source == GO_DEBUG_NONE ? WIRE_HELLO_NO_DWARF : 0,
		.epoch = store_epoch(svc->store)}; /* the primary may go on from it (resume.c) */
	send_msg(s, &reply);
	log_info("%s: primary connected from %s (pid %u), our epoch %" PRIu64, svc->cfg->name,
		 s->addr, h->pid, store_epoch(svc->store));
	return 0;
}

/* ---------- epochs ---------- */

static int on_begin(struct peer *s, const struct wire_msg *m)
{
	char err[256];
	int r;

	if (s->epoch)
		return refuse(s, WIRE_ERR_PROTOCOL, "EPOCH_BEGIN %" PRIu64 " inside epoch %" PRIu64,
			      m->epoch_begin.epoch, store_epoch_number(s->epoch));
	if (m->epoch_begin.incarnation != s->incarnation)
		return refuse(s, WIRE_ERR_PROTOCOL,
			      "EPOCH_BEGIN of incarnation %016" PRIx64 ", HELLO said %016" PRIx64,
			      m->epoch_begin.incarnation, s->incarnation);
	if (store_epoch(s->svc->store) && store_incarnation(s->svc->store) &&
	    store_incarnation(s->svc->store) != s->incarnation && !s->may_replace)
		return refuse(s, WIRE_ERR_INCARNATION_REFUSED,
			      "an epoch of incarnation %016" PRIx64 " over the image of %016" PRIx64,
			      s->incarnation, store_incarnation(s->svc->store));
	r = store_epoch_begin(s->svc->store, &m->epoch_begin, &s->epoch, err, sizeof(err));
	if (r == -ENOMEM)
		snprintf(err, sizeof(err), "out of memory");
	if (r < 0)
		return refuse(s, WIRE_ERR_PROTOCOL, "%s", err);
	if (wire_pack(&s->record, m) < 0)
		return refuse(s, WIRE_ERR_STORAGE, "out of memory");
	return 0;
}

static int on_epoch_part(struct peer *s, const struct wire_msg *m)
{
	char err[512];
	int r;

	if (!s->epoch)
		return refuse(s, WIRE_ERR_PROTOCOL, "%s outside an epoch", wire_type_name(m->type));
	r = store_epoch_add(s->epoch, m, err, sizeof(err));
	if (r >= 0)
		r = wire_pack(&s->record, m);
	if (r == -ENOMEM)
		snprintf(err, sizeof(err), "out of memory");
	if (r < 0)
		return refuse(s, WIRE_ERR_PROTOCOL, "epoch %" PRIu64 ": %s", store_epoch_number(s->epoch), err);
	return 0;
}

static void resume_reading(struct peer *s);
static void on_read(struct bufferevent *bev, void *arg);

static void on_durable(int r, uint64_t epoch, void *arg)
{
	struct pending_ack *a = arg;
	struct service *svc = a->svc;
	struct peer *s = svc->peer;
	bool ours = s && s->id == a->peer_id && !s->closing;
	uint64_t took_us = now_us() - a->committed_us;

	free(a);
	if (r < 0) {
		if (ours)
			(void)refuse(s, WIRE_ERR_STORAGE, "backup cannot store epoch %" PRIu64 ": %s", epoch,
				     strerror(-r));
		return;
	}
	if (!ours)
		return; /* the primary that sent it is gone: its successor starts over */
	send_msg(s, &(struct wire_msg){.type = WIRE_ACK, .ack = {.epoch = epoch}});
	service_acked(svc, epoch);
	log_debug("%s: epoch %" PRIu64 " durable and acknowledged %" PRIu64 " ms after its commit",
		  svc->cfg->name, epoch, took_us / 1000);
	if (s->read_paused && journal_backlog(svc->journal) < SESSION_MAX_BACKLOG / 2)
		resume_reading(s);
}

/* The image names an executable; the one configured here must be it: say so early (by path). */
static void check_executable(struct peer *s)
{
	char err[768];

	if (s->exe_checked || !store_meta(s->svc->store))
		return;
	s->exe_checked = true;
	if (takeover_check_executable(s->svc, false, err, sizeof(err)) < 0)
		log_warn("%s: %s", s->svc->cfg->name, err);
	takeover_prepare(s->svc); /* so that a takeover need not read the files itself */
}

static void committed(struct peer *s, uint64_t epoch, uint64_t base, uint64_t npages,
		      uint64_t bytes)
{
	struct service *svc = s->svc;

	if (s->may_replace && base == 0) {
		log_warn("%s: the image now holds incarnation %016" PRIx64 " (epoch %" PRIu64 ")",
			 svc->cfg->name, s->incarnation, epoch);
		s->may_replace = false;
		service_replaced(svc);
	}
	service_committed(svc, bytes);
	check_executable(s);
	if (base == 0 || svc->n_epochs % SESSION_LOG_EVERY == 1)
		log_info("%s: committed epoch %" PRIu64 " (%s, %" PRIu64 " pages, %" PRIu64
			 " bytes), image of %" PRIu64 " pages",
			 svc->cfg->name, epoch, base ? "delta" : "full image", npages, bytes,
			 store_npages(svc->store));
	else
		log_debug("%s: committed epoch %" PRIu64 " on %" PRIu64 " (%" PRIu64
			  " pages, %" PRIu64 " bytes)",
			  svc->cfg->name, epoch, base, npages, bytes);
}

/* The store holds the epoch: say so, and read on. */
static void commit_done(struct peer *s)
{
	s->committing = false;
	committed(s, s->commit.epoch, s->commit.base, s->commit.npages, s->commit.bytes);
	if (!s->read_paused && !s->closing)
		bufferevent_enable(s->bev, EV_READ);
}

static void commit_step(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval now = {0, 0};
	struct peer *s = arg;

	(void)fd, (void)what;
	if (!s->committing)
		return;
	if (!store_commit_step(s->svc->store, SESSION_COMMIT_STEP_US)) {
		evtimer_add(s->commit_ev, &now); /* a zero timeout: timers and I/O run first */
		return;
	}
	commit_done(s);
	if (!s->read_paused && !s->closing)
		on_read(s->bev, s); /* what is already buffered would not wake us */
}

static int on_commit(struct peer *s, const struct wire_msg *m)
{
	static const struct timeval now = {0, 0};
	struct service *svc = s->svc;
	struct pending_ack *a;
	uint64_t epoch, base, npages, bytes;
	char err[512];
	int r;

	if (!s->epoch)
		return refuse(s, WIRE_ERR_PROTOCOL, "COMMIT outside an epoch");
	epoch = store_epoch_number(s->epoch);
	base = store_epoch_base(s->epoch);
	npages = store_epoch_npages(s->epoch);
	uint64_t t0 = now_us();
	r = store_commit_begin(svc->store, s->epoch, &m->commit, err, sizeof(err));
	loopwatch_note(svc->cfg->name, "an epoch's verification (store_commit_begin)", t0);
	if (r < 0)
		return refuse(s, WIRE_ERR_PROTOCOL, "epoch %" PRIu64 " refused: %s", epoch, err);
	s->epoch = NULL; /* the store's now: merged in steps (commit_step) */
	s->committing = true;
	bufferevent_disable(s->bev, EV_READ);
	evtimer_add(s->commit_ev, &now);
	/* Verified: a takeover from here on restores it. Durable next, then ACK. */
	r = wire_pack(&s->record, m);
	bytes = s->record.size;
	s->commit.epoch = epoch;
	s->commit.base = base;
	s->commit.npages = npages;
	s->commit.bytes = bytes;
	a = r >= 0 ? malloc(sizeof(*a)) : NULL;
	if (a) {
		*a =
		    (struct pending_ack){.svc = svc, .peer_id = s->id, .committed_us = now_us()};
		r = journal_append(svc->journal, epoch, base, &s->record, on_durable, a);
	}
	if (!a || r < 0) {
		free(a);
		return refuse(s, WIRE_ERR_STORAGE, "backup cannot store epoch %" PRIu64 ": out of memory", epoch);
	}
	if (journal_backlog(svc->journal) > SESSION_MAX_BACKLOG) {
		log_warn("%s: %" PRIu64 " bytes wait for the disk: reading from the primary paused",
			 svc->cfg->name, journal_backlog(svc->journal));
		s->read_paused = true;
		bufferevent_disable(s->bev, EV_READ);
	}
	return 0;
}

/* ---------- dispatch ---------- */

static int on_message(struct peer *s, const struct wire_msg *m)
{
	if (!s->svc && m->type != WIRE_HELLO)
		return refuse(s, WIRE_ERR_PROTOCOL, "expected HELLO, got %s", wire_type_name(m->type));
	switch (m->type) {
	case WIRE_HELLO:
		return on_hello(s, &m->hello);
	case WIRE_EPOCH_BEGIN:
		return on_begin(s, m);
	case WIRE_MAPPINGS:
	case WIRE_THREADS:
	case WIRE_FDS:
	case WIRE_PAGES:
	case WIRE_DELTA:
		return on_epoch_part(s, m);
	case WIRE_COMMIT:
		return on_commit(s, m);
	case WIRE_HEARTBEAT:
		service_heartbeat(s->svc);
		s->peer_stamp_us = m->heartbeat.time_us;
		s->peer_stamp_at_us = now_us();
		/* It was sent after it had our stamp echo_us, held for echo_age_us: alive then. */
		if (m->heartbeat.echo_us)
			failover_heard(s->svc, m->heartbeat.echo_us + m->heartbeat.echo_age_us);
		return 0;
	case WIRE_ERROR:
		log_warn("%s: the primary at %s says: %s", name_of(s), s->addr, m->error.reason);
		peer_close(s, 0, NULL);
		return -ECONNRESET;
	case WIRE_HANDOVER:
		failover_handover(s->svc, m->handover.epoch);
		return 0;
	case WIRE_STAND_DOWN:
		failover_stand_down(s->svc);
		return 0;
	case WIRE_ACK:
		break;
	}
	return refuse(s, WIRE_ERR_PROTOCOL, "unexpected %s", wire_type_name(m->type));
}

/* What a message costs us beyond its bytes: the pages it decodes to, copied and hashed. */
static size_t message_work(const struct wire_msg *m)
{
	if (m->type == WIRE_PAGES)
		return (size_t)m->pages.npages * PAGE_SIZE;
	if (m->type == WIRE_DELTA)
		return (size_t)m->delta.npages * PAGE_SIZE;
	return 0;
}

static void bad_input(struct peer *s, const char *err)
{
	if (s->svc)
		log_warn("%s: bad message from %s: %s", s->svc->cfg->name, s->addr, err);
	else
		log_warn("bad message from %s: %s", s->addr, err);
	peer_close(s, WIRE_ERR_PROTOCOL, err);
}

/*
 * Act on each whole message the decoder holds, feeding it what has
 * arrived one libevent chunk at a time. At most SESSION_READ_BUDGET bytes
 * read and pages decoded per call (a compressed DELTA of 1 MiB of pages
 * may be a few KiB on the wire), then the rest from a deferred callback:
 * the heartbeat timer and the journal's acknowledgements get the loop in
 * between, however much an epoch has brought in.
 */
#define SESSION_READ_BUDGET (1u << 20)
/*
 * What libevent may read ahead of us. Beyond it the bytes wait in the
 * socket, and TCP holds the primary back. Without a bound a large epoch
 * piled up here (hundreds of MiB while we decoded 1 MiB at a time), and a
 * heartbeat from the primary waited behind it for seconds: our echo of its
 * stamp then counts from when we read it, not from when it came, and
 * renewed its lease only up to seconds ago (it froze its service).
 */
#define SESSION_READ_AHEAD (2u << 20)
/*
 * The same for the kernel: its receive buffer autotunes up to tcp_rmem's
 * maximum (32 MiB on the test machine), and a heartbeat behind that much
 * epoch data came to us 0.3-1 s late. 1 MiB (the kernel doubles it) still
 * fills a LAN's bandwidth-delay product many times over.
 */
#define SESSION_RCVBUF (1 << 20)
static void read_some(struct bufferevent *bev, struct peer *s);

static void on_read(struct bufferevent *bev, void *arg)
{
	struct peer *s = arg;
	uint64_t t0 = now_us();

	read_some(bev, s); /* may close s */
	loopwatch_note("a primary's connection", "reading from it (one budget)", t0);
}

static void read_some(struct bufferevent *bev, struct peer *s)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t budget = SESSION_READ_BUDGET;

	while (!s->closing && !s->read_paused && !s->committing) {
		struct evbuffer_iovec v;
		struct wire_msg m;
		char err[512];
		int r;

		if (budget == 0) {
			bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
			return;
		}
		r = wire_decoder_next(s->dec, &m, err, sizeof(err));
		if (r == 1) {
			size_t w = message_work(&m);
			budget = w < budget ? budget - w : 0;
			(void)on_message(s, &m); /* a failure has closed s */
			continue;
		}
		if (r < 0) {
			bad_input(s, err);
			return;
		}
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			return;
		/* A bad byte shows in _next(); bytes lost for want of memory would not. */
		if (wire_decoder_feed(s->dec, v.iov_base, v.iov_len) == -ENOMEM) {
			(void)refuse(s, WIRE_ERR_STORAGE, "out of memory");
			return;
		}
		evbuffer_drain(in, v.iov_len);
		budget = v.iov_len < budget ? budget - v.iov_len : 0;
		if (s->svc)
			failover_heard(s->svc, now_us()); /* bulk data in flight counts as heard */
	}
}

static void resume_reading(struct peer *s)
{
	log_info("%s: the disk has caught up: reading from the primary again", s->svc->cfg->name);
	s->read_paused = false;
	if (s->committing)
		return; /* commit_step reads on when the store has the epoch */
	bufferevent_enable(s->bev, EV_READ);
	on_read(s->bev, s); /* what is already buffered would not wake us */
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct peer *s = arg;
	char why[512];

	tls_describe_event(bev, what, why, sizeof(why));
	if (what & BEV_EVENT_TIMEOUT)
		snprintf(why, sizeof(why), "no HELLO within %d s", SESSION_HELLO_TIMEOUT_SEC);
	if (s->svc)
		log_info("%s: connection from %s closed: %s", name_of(s), s->addr, why);
	else
		log_info("connection from %s closed before HELLO: %s", s->addr, why);
	detach(s, why);
	peer_free(s);
}

void peer_accept(struct daemon *d, struct bufferevent *bev, const char *peer)
{
	struct timeval hello_tv = {.tv_sec = SESSION_HELLO_TIMEOUT_SEC};
	struct peer *s = calloc(1, sizeof(*s));

	if (s) {
		s->d = d;
		s->bev = bev;
		s->id = ++d->next_peer_id;
		snprintf(s->addr, sizeof(s->addr), "%s", peer);
		msgpack_sbuffer_init(&s->record);
		s->dec = wire_decoder_new();
		s->hb_timer = event_new(d->base, -1, EV_PERSIST, send_heartbeat, s);
		s->reaper = event_new(d->base, -1, 0, on_reap, s);
		s->commit_ev = evtimer_new(d->base, commit_step, s);
	}
	if (!s || !s->dec || !s->hb_timer || !s->reaper || !s->commit_ev) {
		log_error("connection from %s dropped: out of memory", peer);
		if (s) {
			if (s->dec)
				wire_decoder_free(s->dec);
			if (s->hb_timer)
				event_free(s->hb_timer);
			if (s->reaper)
				event_free(s->reaper);
			if (s->commit_ev)
				event_free(s->commit_ev);
			free(s);
		}
		bufferevent_free(bev);
		daemon_connection_closed(d, peer);
		return;
	}
	LIST_INSERT_HEAD(&d->peers, s, link);
	log_info("connection from %s accepted", peer);
	bufferevent_setcb(bev, on_read, NULL, on_event, s);
	bufferevent_setwatermark(bev, EV_READ, 0, SESSION_READ_AHEAD);
	(void)setsockopt(bufferevent_getfd(bev), SOL_SOCKET, SO_RCVBUF, &(int){SESSION_RCVBUF},
			 sizeof(int)); /* best effort: only how late a heartbeat may be read */
	bufferevent_set_timeouts(bev, &hello_tv, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	on_read(bev, s); /* the handshake may have brought the HELLO along */
}
