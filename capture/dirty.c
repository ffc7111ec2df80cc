/*
 * dirty.c - which captured pages changed since the backup last got them,
 * by comparing page hashes (the "hash" dirty-tracking method).
 *
 * The table remembers a 64-bit hash of every page as last shipped. It
 * mirrors the backup's page store: an entry exists exactly for the pages
 * the backup holds, so a page the backup dropped (its mapping went away) is
 * shipped again when it comes back. Costs no page faults in the service,
 * unlike write-protect tracking; costs a copy and a hash of every live page
 * per epoch instead.
 */
#include "dirty.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define EMPTY UINT64_MAX

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

uint64_t dirty_page_hash(const void *page)
{
	const uint64_t *w = page;
	uint64_t a = 0x9e3779b97f4a7c15ULL, b = 0xc2b2ae3d27d4eb4fULL;
	for (size_t i = 0; i < PAGE_SIZE / 8; i += 2) {
		a = (a ^ w[i]) * 0x100000001b3ULL;
		b = (b ^ w[i + 1]) * 0x100000001b3ULL;
	}
	return mix(a ^ mix(b));
}

static size_t slot_of(const struct dirty_table *t, uint64_t addr)
{
	return mix(addr >> 12) & (t->cap - 1);
}

static int grow(struct dirty_table *t)
{
	size_t ncap = t->cap ? t->cap * 2 : 1 << 14;
	struct dirty_entry *old = t->e;
	size_t ocap = t->cap;

	t->e = malloc(ncap * sizeof(*t->e));
	if (!t->e) {
		t->e = old;
		return -ENOMEM;
	}
	for (size_t i = 0; i < ncap; i++)
		t->e[i].addr = EMPTY;
	t->cap = ncap;
	t->n = 0;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].addr != EMPTY)
			dirty_set(t, old[i].addr, old[i].hash);
	free(old);
	return 0;
}

int dirty_set(struct dirty_table *t, uint64_t addr, uint64_t hash)
{
	if ((t->n + 1) * 2 > t->cap && grow(t) < 0)
		return -ENOMEM;
	for (size_t i = slot_of(t, addr);; i = (i + 1) & (t->cap - 1)) {
		if (t->e[i].addr == addr) {
			t->e[i].hash = hash;
			return 0;
		}
		if (t->e[i].addr == EMPTY) {
			t->e[i].addr = addr;
			t->e[i].hash = hash;
			t->n++;
			return 0;
		}
	}
}

bool dirty_changed(struct dirty_table *t, uint64_t addr, uint64_t hash)
{
	for (size_t i = t->cap ? slot_of(t, addr) : 0; t->cap; i = (i + 1) & (t->cap - 1)) {
		if (t->e[i].addr == addr)
			return t->e[i].hash != hash;
		if (t->e[i].addr == EMPTY)
			break;
	}
	return true;
}

/* Rebuild without the entries keep() rejects (open addressing has no cheap delete). */
int dirty_retain(struct dirty_table *t, bool (*keep)(void *ctx, uint64_t addr), void *ctx)
{
	struct dirty_table nt = {0};
	for (size_t i = 0; i < t->cap; i++)
		if (t->e[i].addr != EMPTY && keep(ctx, t->e[i].addr) &&
		    dirty_set(&nt, t->e[i].addr, t->e[i].hash) < 0) {
			dirty_reset(&nt);
			return -ENOMEM;
		}
	dirty_reset(t);
	*t = nt;
	return 0;
}

void dirty_reset(struct dirty_table *t)
{
	free(t->e);
	memset(t, 0, sizeof(*t));
}
