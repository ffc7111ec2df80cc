/*
 * sendq.h - the epoch data waiting to go to the backup, handed to the TLS
 * bufferevent in bounded chunks, so that heartbeats never wait behind it.
 *
 * Epoch messages are queued here whole; sendq_pump() moves whole messages
 * into the bufferevent's output only while that holds less than
 * SENDQ_LOW bytes (it runs from the output's low-watermark callback). A
 * heartbeat, written straight to the output, so waits behind at most
 * SENDQ_LOW bytes and one message, however large the epoch: the wire
 * carries messages whole, so a heartbeat can only go between two of them,
 * and page data comes in messages of at most SENDQ_MSG_PAGES pages.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SENDQ_LOW (256u << 10)
#define SENDQ_MSG_PAGES 64u /* pages per PAGES message: 256 KiB */

struct evbuffer;

struct sendq_msg {
	size_t len;
	uint64_t commit_us; /* a COMMIT: when its epoch was queued; else 0 */
};

struct sendq {
	struct evbuffer *buf;
	struct sendq_msg *msgs; /* FIFO: [head, n) */
	size_t head, n, cap;
	size_t open; /* bytes of the message being added */
};

int sendq_init(struct sendq *q);
void sendq_free(struct sendq *q);
void sendq_clear(struct sendq *q);

/* Append bytes to the message being built; sendq_end() closes it. */
int sendq_add(struct sendq *q, const void *p, size_t n);
int sendq_end(struct sendq *q, uint64_t commit_us);

size_t sendq_length(const struct sendq *q);

/*
 * Move whole messages to out while it holds less than SENDQ_LOW bytes.
 * For each COMMIT moved, committed(arg, its commit_us) is called.
 */
void sendq_pump(struct sendq *q, struct evbuffer *out, void (*committed)(void *arg, uint64_t us),
		void *arg);
