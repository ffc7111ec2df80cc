/*
 * sendq.c - see sendq.h.
 */
#include "sendq.h"

#include <errno.h>
#include <event2/buffer.h>
#include <string.h>

#include "util.h"

int sendq_init(struct sendq *q)
{
	memset(q, 0, sizeof(*q));
	q->buf = evbuffer_new();
	return q->buf ? 0 : -ENOMEM;
}

void sendq_free(struct sendq *q)
{
	if (q->buf)
		evbuffer_free(q->buf);
	free(q->msgs);
	memset(q, 0, sizeof(*q));
}

void sendq_clear(struct sendq *q)
{
	evbuffer_drain(q->buf, evbuffer_get_length(q->buf));
	q->head = q->n = 0;
	q->open = 0;
}

int sendq_add(struct sendq *q, const void *p, size_t n)
{
	if (evbuffer_add(q->buf, p, n) < 0)
		return -ENOMEM;
	q->open += n;
	return 0;
}

int sendq_end(struct sendq *q, uint64_t commit_us)
{
	struct sendq_msg *m;

	if (q->head == q->n) /* empty: start the FIFO over */
		q->head = q->n = 0;
	m = array_push(&q->msgs, &q->n, &q->cap, sizeof(*m));
	if (!m)
		return -ENOMEM;
	*m = (struct sendq_msg){.len = q->open, .commit_us = commit_us};
	q->open = 0;
	return 0;
}

size_t sendq_length(const struct sendq *q) { return q->buf ? evbuffer_get_length(q->buf) : 0; }

void sendq_pump(struct sendq *q, struct evbuffer *out, void (*committed)(void *arg, uint64_t us),
		void *arg)
{
	while (q->head < q->n && evbuffer_get_length(out) < SENDQ_LOW) {
		const struct sendq_msg *m = &q->msgs[q->head++];
		/* evbuffer_remove_buffer moves chains, it does not copy them */
		evbuffer_remove_buffer(q->buf, out, m->len);
		if (m->commit_us && committed)
			committed(arg, m->commit_us);
	}
}
