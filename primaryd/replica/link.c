/*
 * link.c - the primary's side of the wire: one mutual-TLS connection to the
 * backup per service, HELLO both ways before any image data, then epochs
 * out and ACKs and heartbeats in.
 *
 * An epoch is packed straight into the bufferevent's output buffer, so the
 * service never waits on the network: link_backlog() tells the epoch timer
 * when the backup is behind, and it then merges epochs (skips capturing)
 * instead of queueing them.
 */
#include <event2/buffer.h>
#include <sys/random.h>
#include <unistd.h>

#include "epoch.h"
#include "guard.h"
#include "log.h"
#include "outcommit.h"
#include "tls.h"
#include "util.h"

#define RECONNECT_MS 500

static int send_sbuf(struct guard *g, msgpack_sbuffer *sb)
{
	int r = bufferevent_write(g->bev, sb->data, sb->size) < 0 ? -EIO : 0;
	g->total_bytes += sb->size;
	msgpack_sbuffer_clear(sb);
	return r;
}

static void boot_id(char *buf, size_t len)
{
	_cleanup_free_ char *b = NULL;
	if (read_file("/proc/sys/kernel/random/boot_id", &b) > 0) {
		b[strcspn(b, "\n")] = 0;
		snprintf(buf, len, "%s", b);
	} else {
		snprintf(buf, len, "unknown");
	}
}

static void send_hello(struct guard *g)
{
	char bid[64];
	msgpack_sbuffer sb;
	boot_id(bid, sizeof(bid));
	struct wire_hello h = {.proto_version = WIRE_PROTO_VERSION,
			       .role = ROLE_PRIMARY,
			       .service = g->svc->name,
			       .boot_id = bid,
			       .pid = getpid(),
			       .incarnation = g->incarnation,
			       .flags = pfailover_hello_flags(g)};
	msgpack_sbuffer_init(&sb);
	g->hello_sent_us = now_us();
	g->peer_stamp_us = 0;
	if (wire_pack_hello(&sb, &h) == 0)
		send_sbuf(g, &sb);
	msgpack_sbuffer_destroy(&sb);
}

static void drop_link(struct guard *g, const char *why)
{
	if (g->bev) {
		log_warn("%s: link to backup %s closed: %s", g->svc->name, g->peer, why);
		bufferevent_free(g->bev);
		g->bev = NULL;
	}
	if (g->dec)
		wire_decoder_free(g->dec);
	g->dec = NULL;
	g->hello_ok = false;
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
		sent = g->hello_sent_us;
	} else if (m->type == WIRE_HEARTBEAT) {
		g->peer_stamp_us = m->heartbeat.time_us;
		g->peer_stamp_at_us = now;
		if (m->heartbeat.echo_us)
			sent = m->heartbeat.echo_us + m->heartbeat.echo_age_us;
	}
	if (!sent)
		return;
	g->last_heard_us = now;
	pfailover_backup_heard(g, sent < now ? sent : now);
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
		g->hello_ok = true;
		g->need_full = true;
		log_info("%s: backup %s accepted us", g->svc->name, g->peer);
		pfailover_backup_hello(g, m->hello.incarnation);
		break;
	case WIRE_ACK:
		if (m->ack.epoch > g->acked) {
			g->acked = m->ack.epoch;
			g->acked_at_us = now_us();
			outcommit_acked(g->oc, g->acked);
		}
		pfailover_acked(g, m->ack.epoch);
		break;
	case WIRE_HEARTBEAT:
		break;
	case WIRE_ERROR:
		log_warn("%s: backup says (%s): %s", g->svc->name,
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

	while (evbuffer_get_length(in)) {
		size_t n = evbuffer_get_contiguous_space(in);
		if (wire_decoder_feed(g->dec, evbuffer_pullup(in, n), n) == -ENOMEM)
			return drop_link(g, "out of memory");
		evbuffer_drain(in, n);
		int r;
		while ((r = wire_decoder_next(g->dec, &m, err, sizeof(err))) == 1) {
			handle_msg(g, &m);
			if (!g->bev)
				return;
		}
		if (r < 0)
			return drop_link(g, err);
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
	g->hs = NULL;
	g->bev = bev;
	snprintf(g->peer, sizeof(g->peer), "%s", peer);
	g->dec = wire_decoder_new();
	bufferevent_setcb(bev, on_read, NULL, on_event, g);
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
	g->hs = NULL;
	log_warn("%s: cannot reach backup %s: %s", g->svc->name, peer, reason);
	guard_link_lost(g);
}

void link_connect(struct guard *g)
{
	static const struct tls_callbacks cbs_template = {.established = on_established,
							  .failed = on_failed};
	struct tls_callbacks cbs = cbs_template;
	char hp[300], err[256];

	if (g->bev || g->hs || g->deposed)
		return;
	cbs.arg = g;
	hostport_format(&g->svc->backup, hp, sizeof(hp));
	if (tls_connect(g->base, g->tls, hp, NULL, &cbs, &g->hs, err, sizeof(err)) < 0) {
		log_warn("%s: cannot connect to backup %s: %s", g->svc->name, hp, err);
		guard_link_lost(g);
	}
}

void link_schedule_reconnect(struct guard *g)
{
	struct timeval tv = {.tv_sec = 0, .tv_usec = RECONNECT_MS * 1000};
	if (!g->reconnect_ev)
		g->reconnect_ev = evtimer_new(g->base, reconnect_cb, g);
	evtimer_add(g->reconnect_ev, &tv);
}

size_t link_backlog(const struct guard *g)
{
	return g->bev ? evbuffer_get_length(bufferevent_get_output(g->bev)) : 0;
}

void link_send_heartbeat(struct guard *g)
{
	msgpack_sbuffer sb;
	if (!g->bev || !g->hello_ok)
		return;
	uint64_t now = now_us();
	struct wire_heartbeat hb = {.seq = ++g->hb_seq,
				    .time_us = now,
				    .epoch = g->acked,
				    .echo_us = g->peer_stamp_us,
				    .echo_age_us = g->peer_stamp_us ? now - g->peer_stamp_at_us : 0};
	msgpack_sbuffer_init(&sb);
	if (wire_pack_heartbeat(&sb, &hb) == 0)
		send_sbuf(g, &sb);
	msgpack_sbuffer_destroy(&sb);
}

int link_send_handover(struct guard *g, uint64_t epoch)
{
	msgpack_sbuffer sb;
	int r;

	if (!g->bev || !g->hello_ok)
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

	if (!g->bev || !g->hello_ok)
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
	return send_sbuf(g, sb);
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
	r = send_sbuf(g, sb);
	if (r < 0)
		return r;
	if (bufferevent_write(g->bev, data, (size_t)n * PAGE_SIZE) < 0)
		return -EIO;
	g->total_bytes += (uint64_t)n * PAGE_SIZE;
	return 0;
}

static int send_pages(struct guard *g, struct wire_epoch_hash *h, msgpack_sbuffer *sb,
		      const struct image *img)
{
	for (size_t i = 0; i < img->n_runs; i++) {
		const struct image_pagerun *run = &img->runs[i];
		for (uint64_t done = 0; done < run->npages;) {
			uint32_t n = run->npages - done > WIRE_MAX_PAGES ? WIRE_MAX_PAGES
									 : run->npages - done;
			int r = send_page_chunk(g, h, sb, run->addr + done * PAGE_SIZE, n,
						img->pages + run->offset + done * PAGE_SIZE);
			if (r < 0)
				return r;
			done += n;
		}
	}
	return 0;
}

static int send_epoch_body(struct guard *g, struct wire_epoch_hash *h, msgpack_sbuffer *sb,
			   const struct image *img, uint64_t epoch, uint64_t base)
{
	struct wire_msg m = {.type = WIRE_EPOCH_BEGIN,
			     .epoch_begin = {.epoch = epoch,
					     .base_epoch = base,
					     .incarnation = g->incarnation}};
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
	if (r < 0)
		return r;
	return send_pages(g, h, sb, img);
}

int link_send_epoch(struct guard *g, const struct image *img, uint64_t epoch, uint64_t base)
{
	struct wire_epoch_hash h;
	struct wire_msg commit = {.type = WIRE_COMMIT};
	msgpack_sbuffer sb;
	uint64_t before = g->total_bytes;
	int r;

	if (!g->bev)
		return -ENOTCONN;
	r = wire_epoch_hash_init(&h);
	if (r < 0)
		return r;
	msgpack_sbuffer_init(&sb);
	r = send_epoch_body(g, &h, &sb, img, epoch, base);
	if (r == 0)
		r = wire_epoch_hash_final(&h, &commit.commit);
	if (r == 0) {
		r = wire_pack(&sb, &commit);
		if (r == 0)
			r = send_sbuf(g, &sb);
	}
	msgpack_sbuffer_destroy(&sb);
	wire_epoch_hash_done(&h);
	g->last_bytes = g->total_bytes - before;
	if (r < 0)
		drop_link(g, "cannot encode an epoch");
	return r;
}
