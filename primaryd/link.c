/*
 * link.c - the primary's side of the wire: one mutual-TLS connection to the
 * backup per service, HELLO both ways before any image data, then epochs
 * out and ACKs and heartbeats in.
 *
 * An epoch is packed into the send queue (sendq.h), which feeds the
 * bufferevent in bounded chunks, so heartbeats never wait behind a large
 * epoch and the service never waits on the network: link_backlog() tells
 * the epoch timer when the backup is behind, and it then merges epochs
 * (skips capturing) instead of queueing them.
 */
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <linux/sockios.h>
#include <openssl/ssl.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <unistd.h>

#include "epoch.h"
#include "guard.h"
#include "log.h"
#include "loopwatch.h"
#include "tls.h"
#include "util.h"

#define RECONNECT_MS 500

/* Part of an epoch message: into the send queue, behind nothing but epoch data. */
static int queue_sbuf(struct guard *g, msgpack_sbuffer *sb)
{
	int r = sendq_add(&g->link.sendq, sb->data, sb->size);
	g->link.total_bytes += sb->size;
	msgpack_sbuffer_clear(sb);
	return r;
}

static void committed_out(void *arg, uint64_t queued_us)
{
	struct guard *g = arg;
	if (g->sess)
		hist_add_us(&g->sess->cost.h[COST_TLS_WRITE], now_us() - queued_us);
}

static void pump(struct guard *g)
{
	if (g->link.bev)
		sendq_pump(&g->link.sendq, bufferevent_get_output(g->link.bev), committed_out, g);
}

/* HELLO and heartbeats: straight to the output, ahead of the queued epoch data. */
static int send_sbuf(struct guard *g, msgpack_sbuffer *sb)
{
	int r = bufferevent_write(g->link.bev, sb->data, sb->size) < 0 ? -EIO : 0;
	g->link.total_bytes += sb->size;
	msgpack_sbuffer_clear(sb);
	return r;
}

static void epoch_free(struct guard *g);

static void send_hello(struct guard *g)
{
	char bid[64];
	msgpack_sbuffer sb;
	(void)read_boot_id(bid, sizeof(bid));
	struct wire_hello h = {.proto_version = WIRE_PROTO_VERSION,
			       .role = ROLE_PRIMARY,
			       .service = g->svc->name,
			       .boot_id = bid,
			       .pid = getpid(),
			       .incarnation = g->fo.incarnation,
			       .flags = pfailover_hello_flags(g)};
	msgpack_sbuffer_init(&sb);
	g->link.hello_sent_us = now_us();
	g->link.peer_stamp_us = 0;
	if (wire_pack_hello(&sb, &h) == 0)
		send_sbuf(g, &sb);
	msgpack_sbuffer_destroy(&sb);
}

static void drop_link(struct guard *g, const char *why)
{
	if (g->link.bev) {
		log_warn("%s: link to backup %s closed: %s", g->svc->name, g->link.peer, why);
		bufferevent_free(g->link.bev);
		g->link.bev = NULL;
	}
	if (g->link.dec)
		wire_decoder_free(g->link.dec);
	g->link.dec = NULL;
	g->link.hello_ok = false;
	epoch_free(g);
	g->epoch_owed = false;
	if (g->link.sendq.buf)
		sendq_clear(&g->link.sendq);
	guard_link_lost(g);
}

/*
 * Only HELLO and HEARTBEAT renew the lease (an ERROR from a backup that is
 * taking over must not thaw a frozen service even for a moment), and from
 * the time the backup is known to have sent them, never from when we read
 * them (a primaryd that stalled reads old heartbeats): a HELLO answers
 * ours, so it was sent after we sent that; a HEARTBEAT echoes our newest
 * stamp it had and how long it had held it (wire.h).
 */
static void renew_lease(struct guard *g, const struct wire_msg *m)
{
	uint64_t now = now_us(), sent = 0;

	if (m->type == WIRE_HELLO) {
		sent = g->link.hello_sent_us;
	} else if (m->type == WIRE_HEARTBEAT) {
		uint64_t echo = m->heartbeat.echo_us;

		g->link.peer_stamp_us = m->heartbeat.time_us;
		g->link.peer_stamp_at_us = now;
		/* It left us no earlier than it was stamped: when it left, if we know. */
		if (echo && echo == g->link.hb_left_stamp)
			echo = g->link.hb_left_us;
		if (echo)
			sent = echo + m->heartbeat.echo_age_us;
	}
	if (sent)
		guard_backup_heard(g, sent < now ? sent : now);
}

static void handle_msg(struct guard *g, const struct wire_msg *m)
{
	renew_lease(g, m);
	switch (m->type) {
	case WIRE_HELLO:
		if (m->hello.role != ROLE_BACKUP) {
			drop_link(g, "peer did not say it is a backup");
			return;
		}
		if (m->hello.proto_version != WIRE_PROTO_VERSION) {
			log_error("%s: backup %s speaks protocol version %u, we speak %u: run the "
				  "same CheckSync version on both hosts", g->svc->name, g->link.peer,
				  m->hello.proto_version, WIRE_PROTO_VERSION);
			drop_link(g, "incompatible protocol version");
			return;
		}
		g->link.hello_ok = true;
		log_info("%s: backup %s accepted us", g->svc->name, g->link.peer);
		g->link.backup_no_dwarf = m->hello.flags & WIRE_HELLO_NO_DWARF;
		if (g->link.backup_no_dwarf)
			log_warn("%s: the backup's host (%s) has no DWARF for the service: a takeover "
				 "there whose thread ids are taken cannot patch the runtime, and Go's "
				 "preemption signals may go astray (install the debug file there, or "
				 "set debug_file)", g->svc->name, g->link.peer);
		link_send_heartbeat(g); /* a first stamp, before any epoch is queued */
		guard_backup_hello(g, &m->hello);
		break;
	case WIRE_ACK:
		guard_acked(g, m->ack.epoch);
		break;
	case WIRE_HEARTBEAT:
		break;
	case WIRE_ERROR:
		log_warn("%s: backup %s says (%s): %s", g->svc->name, g->link.peer,
			 wire_error_code_name(m->error.code), m->error.reason);
		if (m->error.code == WIRE_ERR_TAKEN_OVER) {
			pfailover_deposed(g, m->error.reason);
			return;
		}
		if (m->error.code == WIRE_ERR_HANDOVER_FAILED)
			pfailover_handover_failed(g, m->error.reason);
		if (m->error.code == WIRE_ERR_STOOD_DOWN) {
			pfailover_stood_down(g, m->error.reason);
			return;
		}
		drop_link(g, "backup reported an error");
		return;
	default:
		drop_link(g, "unexpected message from the backup");
		return;
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct guard *g = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char err[256];
	struct wire_msg m;

	if (evbuffer_get_length(in))
		g->link.heard_any_us = now_us();
	while (evbuffer_get_length(in)) {
		size_t n = evbuffer_get_contiguous_space(in);
		if (wire_decoder_feed(g->link.dec, evbuffer_pullup(in, n), n) == -ENOMEM)
			return drop_link(g, "out of memory");
		evbuffer_drain(in, n);
		int r;
		while ((r = wire_decoder_next(g->link.dec, &m, err, sizeof(err))) == 1) {
			handle_msg(g, &m);
			if (!g->link.bev)
				return;
		}
		if (r < 0)
			return drop_link(g, err);
	}
}

/* The output is down to its low watermark: give it the next chunk of the queue. */
static void on_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	pump(arg);
}

/* Bytes leave the output buffer for TLS and the socket: note when our last heartbeat went. */
static void on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct guard *g = arg;

	(void)buf;
	g->link.out_added += info->n_added;
	g->link.out_drained += info->n_deleted;
	if (g->link.hb_stamp && info->n_deleted && g->link.out_drained >= g->link.hb_end) {
		g->link.hb_left_stamp = g->link.hb_stamp;
		g->link.hb_left_us = now_us();
		g->link.hb_stamp = 0;
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct guard *g = arg;
	char why[256];
	tls_describe_event(bev, what, why, sizeof(why));
	drop_link(g, why);
}

static void on_established(struct bufferevent *bev, const char *peer, void *arg)
{
	struct guard *g = arg;
	g->link.hs = NULL;
	g->link.bev = bev;
	snprintf(g->link.peer, sizeof(g->link.peer), "%s", peer);
	g->link.dec = wire_decoder_new();
	if (!g->link.sendq.buf && sendq_init(&g->link.sendq) < 0)
		log_error("%s: out of memory for the send queue", g->svc->name);
	bufferevent_setwatermark(bev, EV_WRITE, SENDQ_LOW, 0);
	bufferevent_setcb(bev, on_read, on_write, on_event, g);
	g->link.out_added = g->link.out_drained = g->link.hb_stamp = g->link.hb_left_stamp = 0;
	g->link.heard_any_us = now_us();
	evbuffer_add_cb(bufferevent_get_output(bev), on_output, g);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	/* Nothing but HELLO until the backup's HELLO proves it accepted our certificate. */
	send_hello(g);
	on_read(bev, g);
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	link_connect(arg);
}

static void on_failed(const char *peer, const char *reason, void *arg)
{
	struct guard *g = arg;
	g->link.hs = NULL;
	log_warn("%s: cannot reach backup %s: %s", g->svc->name, peer, reason);
	guard_link_lost(g);
}

void link_connect(struct guard *g)
{
	static const struct tls_callbacks cbs_template = {.established = on_established,
							  .failed = on_failed};
	struct tls_callbacks cbs = cbs_template;
	char hp[300], err[256];

	if (g->link.bev || g->link.hs || pfailover_deposed_state(g))
		return;
	cbs.arg = g;
	hostport_format(&g->svc->backup, hp, sizeof(hp));
	/* backup_name: the image goes to that certificate's holder and nobody else. */
	if (tls_connect(g->base, g->tls, hp, g->svc->backup_name, &cbs, &g->link.hs, err, sizeof(err)) <
	    0) {
		log_warn("%s: cannot connect to backup %s: %s", g->svc->name, hp, err);
		guard_link_lost(g);
	}
}

void link_schedule_reconnect(struct guard *g)
{
	struct timeval tv = {.tv_sec = 0, .tv_usec = RECONNECT_MS * 1000};
	if (!g->link.reconnect_ev)
		g->link.reconnect_ev = evtimer_new(g->base, reconnect_cb, g);
	evtimer_add(g->link.reconnect_ev, &tv);
}

size_t link_backlog(const struct guard *g)
{
	return g->link.bev ? evbuffer_get_length(bufferevent_get_output(g->link.bev)) + sendq_length(&g->link.sendq)
		      : 0;
}

/*
 * Bytes we have queued that have not left for the wire yet: in our buffer,
 * or in the socket's not yet sent (SIOCOUTQNSD).
 */
static bool output_waits(const struct guard *g)
{
	int fd = bufferevent_getfd(g->link.bev), unsent = 0;

	if (evbuffer_get_length(bufferevent_get_output(g->link.bev)))
		return true;
	return fd >= 0 && ioctl(fd, SIOCOUTQNSD, &unsent) == 0 && unsent > 0;
}

/*
 * A heartbeat's stamp is what the backup echoes to renew our lease (from
 * the time we sent it, plus how long the backup has held it), so it must
 * leave at once: one queued behind an epoch would arrive late and renew
 * from too early. While an epoch drains we send none; the backup counts
 * the epoch's bytes as hearing us, and its echo of our last stamp ages
 * with its own clock, so the lease goes on being renewed.
 */
void link_send_heartbeat(struct guard *g)
{
	msgpack_sbuffer sb;
	if (!g->link.bev || !g->link.hello_ok || output_waits(g))
		return;
	uint64_t now = now_us();
	struct wire_heartbeat hb = {.seq = ++g->link.hb_seq,
				    .time_us = now,
				    .epoch = g->acked,
				    .echo_us = g->link.peer_stamp_us,
				    .echo_age_us = g->link.peer_stamp_us ? now - g->link.peer_stamp_at_us : 0};
	msgpack_sbuffer_init(&sb);
	if (wire_pack_heartbeat(&sb, &hb) == 0 && send_sbuf(g, &sb) == 0) {
		g->link.hb_stamp = now;
		g->link.hb_end = g->link.out_added;
	}
	msgpack_sbuffer_destroy(&sb);
}

int link_send_handover(struct guard *g, uint64_t epoch)
{
	msgpack_sbuffer sb;
	int r;

	if (!g->link.bev || !g->link.hello_ok)
		return -ENOTCONN;
	msgpack_sbuffer_init(&sb);
	r = wire_pack_handover(&sb, &(struct wire_handover){.epoch = epoch});
	if (r == 0)
		r = send_sbuf(g, &sb);
	msgpack_sbuffer_destroy(&sb);
	return r;
}

int link_send_stand_down(struct guard *g)
{
	msgpack_sbuffer sb;
	int r;

	if (!g->link.bev || !g->link.hello_ok)
		return -ENOTCONN;
	msgpack_sbuffer_init(&sb);
	r = wire_pack_stand_down(&sb);
	if (r == 0)
		r = send_sbuf(g, &sb);
	msgpack_sbuffer_destroy(&sb);
	return r;
}

/* Pack one message, add it to the epoch hash, queue it. */
static int send_msg(struct guard *g, struct wire_epoch_hash *h, msgpack_sbuffer *sb,
		    const struct wire_msg *m)
{
	int r = wire_pack(sb, m);
	if (r < 0)
		return r;
	r = wire_epoch_hash_add(h, m);
	if (r < 0)
		return r;
	r = queue_sbuf(g, sb);
	return r < 0 ? r : sendq_end(&g->link.sendq, 0);
}

static int send_threads(struct guard *g, struct wire_epoch_hash *h, msgpack_sbuffer *sb,
			const struct image *img)
{
	size_t n = img->n_threads + 1;
	msgpack_sbuffer *parts = calloc(n, sizeof(*parts));
	struct wire_blob *blobs = calloc(n, sizeof(*blobs));
	int r = parts && blobs ? 0 : -ENOMEM;

	for (size_t i = 0; i < n && r == 0; i++) {
		msgpack_sbuffer_init(&parts[i]);
		r = i == 0 ? image_pack_process(img, &parts[i])
			   : image_pack_thread(&img->threads[i - 1], &parts[i]);
		blobs[i] = (struct wire_blob){.data = (uint8_t *)parts[i].data,
					      .len = parts[i].size};
	}
	if (r == 0) {
		struct wire_msg m = {.type = WIRE_THREADS, .threads = {.threads = blobs, .n = n}};
		r = send_msg(g, h, sb, &m);
	}
	for (size_t i = 0; parts && i < n; i++)
		msgpack_sbuffer_destroy(&parts[i]);
	free(parts);
	free(blobs);
	return r;
}

/* One PAGES message: its header packed, its page bytes written straight from the image. */
static int send_page_chunk(struct guard *g, struct wire_epoch_hash *h, msgpack_sbuffer *sb,
			   uint64_t addr, uint32_t n, const uint8_t *data)
{
	struct wire_msg m = {.type = WIRE_PAGES, .pages = {.addr = addr, .npages = n, .data = data}};
	int r = wire_epoch_hash_add(h, &m);
	if (r < 0)
		return r;
	r = wire_pack_pages_head(sb, addr, n);
	if (r < 0)
		return r;
	r = queue_sbuf(g, sb);
	if (r < 0)
		return r;
	if (sendq_add(&g->link.sendq, data, (size_t)n * PAGE_SIZE) < 0)
		return -ENOMEM;
	g->link.total_bytes += (uint64_t)n * PAGE_SIZE;
	return sendq_end(&g->link.sendq, 0);
}

/*
 * An epoch being sent: its metadata is queued at once, its pages a slice
 * at a time from an event that runs again until they are all queued, then
 * COMMIT. So encoding, compressing and hashing a large epoch never holds
 * the loop for longer than one slice: heartbeats, ACKs and the lease
 * timer run in between. The next epoch waits until this one is queued.
 */
#define SLICE_PAGES 256u

struct link_epoch {
	struct image *img;
	struct wire_epoch_hash h;
	msgpack_sbuffer sb;
	size_t run;
	uint64_t page;		     /* cursor: the next page to send */
	uint64_t t0, pack_us, enc_us; /* for the cost breakdown */
	uint64_t select_us;
	struct event *ev;
};

static void epoch_free(struct guard *g)
{
	struct link_epoch *e = g->link.sending;

	if (!e)
		return;
	if (e->ev)
		event_free(e->ev);
	msgpack_sbuffer_destroy(&e->sb);
	wire_epoch_hash_done(&e->h);
	capture_session_image_free(g->sess, e->img);
	free(e);
	g->link.sending = NULL;
}

/* An epoch is being queued, or is still being made ready after its resume (guard.c). */
bool link_busy(const struct guard *g) { return g->link.sending != NULL || guard_after_pending(g); }

/* The next n (<= SLICE_PAGES) pages from the cursor, as PAGES messages of at most SENDQ_MSG_PAGES. */
static int slice_pages(struct guard *g, struct link_epoch *e, uint32_t *sent)
{
	const struct image *img = e->img;

	*sent = 0;
	while (e->run < img->n_runs && *sent < SLICE_PAGES) {
		const struct image_pagerun *run = &img->runs[e->run];
		uint64_t left = run->npages - e->page, room = SLICE_PAGES - *sent;
		uint32_t n = left < room ? left : room;
		if (n > SENDQ_MSG_PAGES)
			n = SENDQ_MSG_PAGES;
		int r = send_page_chunk(g, &e->h, &e->sb, run->addr + e->page * PAGE_SIZE, n,
					img->pages + run->offset + e->page * PAGE_SIZE);
		if (r < 0)
			return r;
		*sent += n;
		if ((e->page += n) == run->npages) {
			e->run++;
			e->page = 0;
		}
	}
	return 0;
}

/*
 * Pages are hashed and encoded HASH_GROUP at a time: the checksum warms a
 * group (64 KiB, in L2) for the encoder, and its time is read once a group,
 * not twice a page (the clock reads were 3% of primaryd's CPU on CPU 0).
 */
#define HASH_GROUP 16u

/* The epoch's cursor to the page after the one in run it is at. */
static void next_page(struct link_epoch *e, const struct image_pagerun *run)
{
	if (++e->page == run->npages) {
		e->run++;
		e->page = 0;
	}
}

/* The next pages as one DELTA message; the checksum covers each page's new contents. */
static int slice_delta(struct guard *g, struct link_epoch *e, uint32_t *sent)
{
	const struct image *img = e->img;
	struct capture_session *s = g->sess;
	struct delta_batch b;
	uint64_t t, hash_us = 0;
	int r;

	*sent = 0;
	t = now_us();
	capture_session_batch_begin(s);
	while (e->run < img->n_runs && *sent < WIRE_MAX_DELTA_PAGES) {
		size_t run0 = e->run;
		uint64_t page0 = e->page, h0 = now_us();
		uint32_t n = 0;
		for (; e->run < img->n_runs && n < HASH_GROUP && *sent + n < WIRE_MAX_DELTA_PAGES; n++) {
			const struct image_pagerun *run = &img->runs[e->run];
			r = wire_epoch_hash_add_page(&e->h, run->addr + e->page * PAGE_SIZE,
						     img->pages + run->offset + e->page * PAGE_SIZE);
			if (r < 0)
				return r;
			next_page(e, run);
		}
		hash_us += now_us() - h0;
		for (e->run = run0, e->page = page0; n; n--) {
			const struct image_pagerun *run = &img->runs[e->run];
			capture_session_batch_add(s, run->addr + e->page * PAGE_SIZE,
						  img->pages + run->offset + e->page * PAGE_SIZE);
			(*sent)++;
			next_page(e, run);
		}
	}
	if (!*sent)
		return 0;
	uint64_t c0 = s->enc_compress_us;
	if ((r = capture_session_batch_end(s, &b)) < 0)
		return r;
	e->enc_us += now_us() - t - hash_us - (s->enc_compress_us - c0);
	t = now_us();
	struct wire_delta m = {.codec = b.codec, .npages = b.npages, .raw_len = b.raw_len,
			       .data = {b.data, b.len}};
	r = wire_pack_delta(&e->sb, &m);
	free(b.data);
	if (r >= 0)
		r = queue_sbuf(g, &e->sb);
	if (r >= 0)
		r = sendq_end(&g->link.sendq, 0);
	e->pack_us += now_us() - t + hash_us;
	return r;
}

static int finish_epoch(struct guard *g, struct link_epoch *e)
{
	struct wire_msg commit = {.type = WIRE_COMMIT};
	struct capture_session *s = g->sess;
	uint64_t t = now_us();
	int r = wire_epoch_hash_final(&e->h, &commit.commit);

	if (r == 0)
		r = wire_pack(&e->sb, &commit);
	if (r == 0)
		r = queue_sbuf(g, &e->sb);
	if (r == 0)
		r = sendq_end(&g->link.sendq, e->t0);
	if (r < 0)
		return r;
	e->pack_us += now_us() - t;
	hist_add_us(&s->cost.h[COST_ENCODE], e->select_us + e->enc_us);
	hist_add_us(&s->cost.h[COST_COMPRESS], s->enc_compress_us);
	hist_add_us(&s->cost.h[COST_PACK], e->pack_us);
	g->link.last_bytes = g->link.total_bytes - g->link.epoch_bytes_from;
	pump(g);
	epoch_free(g);
	/*
	 * An epoch tick came while this one was being queued: the next epoch
	 * goes now, not a whole interval later (that halved epochs/s whenever
	 * shipping took a little longer than the interval).
	 */
	if (g->epoch_owed && g->epoch_ev) {
		g->epoch_owed = false;
		event_active(g->epoch_ev, EV_TIMEOUT, 1);
	}
	return 0;
}

static void slice_cb(evutil_socket_t fd, short what, void *arg)
{
	struct guard *g = arg;
	struct link_epoch *e = g->link.sending;
	bool deltas = shipped_enabled(&g->sess->shipped_pages);
	uint32_t sent;
	uint64_t t = now_us();
	int r;

	(void)fd, (void)what;
	if (!e)
		return;
	r = deltas ? slice_delta(g, e, &sent) : slice_pages(g, e, &sent);
	loopwatch_note(g->svc->name, "a slice of an epoch's pages", t);
	if (!deltas)
		e->pack_us += now_us() - t;
	if (r >= 0 && e->run < e->img->n_runs) {
		/* A zero timeout, not event_active(): that would run again before any I/O. */
		static const struct timeval now = {0, 0};
		pump(g);
		evtimer_add(e->ev, &now);
		return;
	}
	if (r >= 0)
		r = finish_epoch(g, e);
	if (r < 0)
		drop_link(g, "cannot encode an epoch");
}

void link_finish_epoch(struct guard *g)
{
	while (g->link.sending)
		slice_cb(-1, 0, g);
}

static int send_epoch_body(struct guard *g, struct wire_epoch_hash *h, msgpack_sbuffer *sb,
			   const struct image *img, uint64_t epoch, uint64_t base)
{
	struct wire_msg m = {.type = WIRE_EPOCH_BEGIN,
			     .epoch_begin = {.epoch = epoch,
					     .base_epoch = base,
					     .incarnation = g->fo.incarnation}};
	_cleanup_free_ struct wire_vma *vmas = NULL;
	uint32_t nv;
	int r = send_msg(g, h, sb, &m);
	if (r < 0)
		return r;
	r = epoch_wire_vmas(img, &vmas, &nv);
	if (r < 0)
		return r;
	m = (struct wire_msg){.type = WIRE_MAPPINGS, .mappings = {.vmas = vmas, .n = nv}};
	if ((r = send_msg(g, h, sb, &m)) < 0)
		return r;
	if ((r = send_threads(g, h, sb, img)) < 0)
		return r;
	msgpack_sbuffer fds;
	msgpack_sbuffer_init(&fds);
	r = image_pack_fds(img, &fds);
	m = (struct wire_msg){.type = WIRE_FDS,
			      .fds = {.table = {.data = (uint8_t *)fds.data, .len = fds.size}}};
	if (r == 0)
		r = send_msg(g, h, sb, &m);
	msgpack_sbuffer_destroy(&fds);
	return r;
}

int link_send_epoch(struct guard *g, struct image *img, uint64_t epoch, uint64_t base)
{
	struct link_epoch *e;
	int r;

	if (!g->link.bev || g->link.sending || !g->link.sendq.buf) {
		capture_session_image_free(g->sess, img);
		return g->link.bev ? -EBUSY : -ENOTCONN;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		capture_session_image_free(g->sess, img);
		return -ENOMEM;
	}
	e->img = img;
	e->t0 = now_us();
	e->select_us = e->t0 - g->sess->enc_start_us;
	msgpack_sbuffer_init(&e->sb);
	g->link.sending = e;
	g->link.epoch_bytes_from = g->link.total_bytes;
	r = wire_epoch_hash_init(&e->h);
	if (r >= 0)
		r = send_epoch_body(g, &e->h, &e->sb, img, epoch, base);
	e->ev = r >= 0 ? event_new(g->base, -1, 0, slice_cb, g) : NULL;
	if (r >= 0 && !e->ev)
		r = -ENOMEM;
	if (r < 0) {
		drop_link(g, "cannot encode an epoch");
		return r;
	}
	e->pack_us = now_us() - e->t0;
	pump(g);
	slice_cb(-1, 0, g); /* the first slice now; the rest from the loop */
	return 0;
}

/* Bytes the backup has sent that we have not read yet: in the kernel, in TLS, in libevent. */
bool link_input_waits(const struct guard *g)
{
	if (!g->link.bev)
		return false;
	SSL *ssl = bufferevent_openssl_get_ssl(g->link.bev);
	int fd = bufferevent_getfd(g->link.bev), n = 0;

	if (evbuffer_get_length(bufferevent_get_input(g->link.bev)) || (ssl && SSL_pending(ssl) > 0))
		return true;
	return fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/*
 * A backup that has said nothing for a whole failover timeout is gone, or
 * cannot reach us: drop the link and find it again. TCP alone would wait
 * out its retransmission backoff (seconds after a cut), while a backupd
 * restarted in the meantime waits for us (failover.c gives us one more
 * failover timeout) and then takes over. Anything it sent counts (an ACK
 * says it is there as well as a heartbeat), and so do bytes we have not
 * read yet: after our own loop stalled, they are read before we judge.
 * The lease is another matter: only heartbeats renew it (renew_lease).
 */
void link_drop_if_silent(struct guard *g, uint64_t now)
{
	uint64_t limit = (uint64_t)g->svc->failover_timeout_ms * 1000;
	uint64_t heard = g->link.heard_any_us > g->last_heard_us ? g->link.heard_any_us : g->last_heard_us;
	char why[96];

	if (!g->link.bev || !g->link.hello_ok || now - heard <= limit || link_input_waits(g))
		return;
	snprintf(why, sizeof(why), "nothing heard from it for %lu ms",
		 (unsigned long)((now - heard) / 1000));
	drop_link(g, why);
}

void link_close(struct guard *g, const char *why)
{
	if (g->link.hs)
		tls_handshake_cancel(g->link.hs);
	g->link.hs = NULL;
	drop_link(g, why);
	if (g->link.reconnect_ev)
		evtimer_del(g->link.reconnect_ev);
}

void link_free(struct guard *g)
{
	link_close(g, "primaryd is stopping");
	sendq_free(&g->link.sendq); /* found by the ASan build's primaryd-daemon test */
	if (g->link.reconnect_ev)
		event_free(g->link.reconnect_ev);
	g->link.reconnect_ev = NULL;
}
