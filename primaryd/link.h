/*
 * link.h - a service's link to its backup (link.c): the TLS connection,
 * the wire decoder, the send queue, and the stamps that renew the lease.
 *
 * struct link is written by link.c only. What the backup's messages mean
 * for the rest of the guard (the acknowledged epoch, the lease, the
 * failover states) link.c reports as events to guard.c (guard.h:
 * guard_backup_hello, guard_backup_heard, guard_acked, guard_link_lost),
 * which writes it.
 */
#pragma once

#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stdint.h>

#include "sendq.h"

struct guard;
struct image;
struct link_epoch;
struct tls_handshake;
struct wire_decoder;

struct link {
	struct bufferevent *bev;
	struct tls_handshake *hs;
	struct wire_decoder *dec;
	bool hello_ok;	      /* the backup's HELLO accepted us */
	bool backup_no_dwarf; /* its HELLO said its host has no DWARF for the service */
	char peer[128];
	uint64_t hello_sent_us;			  /* our HELLO: the backup's answers it */
	uint64_t peer_stamp_us, peer_stamp_at_us; /* the backup's newest time_us, and when it came */
	/* when our newest heartbeat left the output buffer (its stamp renews the lease) */
	uint64_t out_added, out_drained;    /* bytes through the output buffer */
	uint64_t hb_seq, hb_stamp, hb_end;  /* the heartbeat queued last, and where it ends */
	uint64_t hb_left_stamp, hb_left_us; /* the heartbeat that left last, and when */
	uint64_t heard_any_us; /* any byte from the backup (an ACK too): it is there; not the lease */
	struct sendq sendq; /* epoch data not yet handed to the bufferevent (sendq.h) */
	struct link_epoch *sending; /* the epoch whose pages are being queued */
	uint64_t epoch_bytes_from, last_bytes, total_bytes; /* bytes queued: at the epoch's start, of the last epoch, since start */
	struct event *reconnect_ev;
};

void link_connect(struct guard *g);
void link_schedule_reconnect(struct guard *g);
void link_send_heartbeat(struct guard *g);
/* Takes img, and queues its pages slice by slice from the loop; link_busy() until done. */
int link_send_epoch(struct guard *g, struct image *img, uint64_t epoch, uint64_t base);
bool link_busy(const struct guard *g);
/* Bytes from the backup wait unread (in the kernel, TLS or libevent): our loop was held. */
bool link_input_waits(const struct guard *g);
/* Queue the rest of the epoch in flight now, on the spot (a final epoch must follow it). */
void link_finish_epoch(struct guard *g);
size_t link_backlog(const struct guard *g);
int link_send_handover(struct guard *g, uint64_t epoch);
int link_send_stand_down(struct guard *g);
/* Close the link (or cancel its handshake) and any reconnect timer. */
void link_close(struct guard *g, const char *why);
/* link_close, and free the send queue and the timer: the guard is stopping. */
void link_free(struct guard *g);
/* Drop the link when the backup has been silent for failover_timeout_ms. */
void link_drop_if_silent(struct guard *g, uint64_t now);
