/*
 * shipped.c - see shipped.h.
 */
#include "shipped.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "delta.h"
#include "util.h"

#define SHIPPED_EMPTY UINT64_MAX
#define SHIPPED_ZERO 1ull /* in a slot's address, which is page aligned */

static bool slot_is(const struct shipped_cache *c, size_t slot, uint64_t addr)
{
	return (c->addr[slot] & ~SHIPPED_ZERO) == addr;
}

static size_t set_of(const struct shipped_cache *c, uint64_t addr)
{
	uint64_t h = addr >> 12;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h & (c->nsets - 1);
}

int shipped_init(struct shipped_cache *c, uint64_t bytes)
{
	size_t nsets = 1;

	memset(c, 0, sizeof(*c));
	if (bytes < 2 * PAGE_SIZE)
		return 0; /* deltas off */
	while (nsets * 2 * 2 * PAGE_SIZE <= bytes)
		nsets *= 2;
	c->map_len = nsets * 2 * PAGE_SIZE;
	/* Reserved, not committed: a slot costs memory once a page lands in it. */
	c->data = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	c->addr = malloc(nsets * 2 * sizeof(*c->addr));
	c->older = calloc(nsets, 1);
	if (c->data == MAP_FAILED || !c->addr || !c->older) {
		if (c->data == MAP_FAILED)
			c->data = NULL;
		shipped_free(c);
		return -ENOMEM;
	}
	c->nsets = nsets;
	for (size_t i = 0; i < nsets * 2; i++)
		c->addr[i] = SHIPPED_EMPTY;
	return 0;
}

static void forget_kept(struct shipped_cache *c)
{
	free(c->kept);
	c->kept = NULL;
	c->n_kept = 0;
}

void shipped_free(struct shipped_cache *c)
{
	if (c->data)
		munmap(c->data, c->map_len);
	free(c->addr);
	free(c->older);
	free(c->kept);
	memset(c, 0, sizeof(*c));
}

const uint8_t *shipped_lookup(struct shipped_cache *c, uint64_t addr)
{
	size_t set = set_of(c, addr);

	for (size_t way = 0; way < 2; way++)
		if (slot_is(c, set * 2 + way, addr)) {
			c->older[set] = !way; /* the other way is now the older */
			c->hits++;
			if (c->addr[set * 2 + way] & SHIPPED_ZERO)
				return delta_zero_page;
			return c->data + (set * 2 + way) * PAGE_SIZE;
		}
	c->misses++;
	return NULL;
}

void shipped_store(struct shipped_cache *c, uint64_t addr, const uint8_t *page)
{
	size_t set = set_of(c, addr), way;

	if (slot_is(c, set * 2, addr))
		way = 0;
	else if (slot_is(c, set * 2 + 1, addr))
		way = 1;
	else if (c->addr[set * 2] == SHIPPED_EMPTY)
		way = 0;
	else if (c->addr[set * 2 + 1] == SHIPPED_EMPTY)
		way = 1;
	else {
		way = c->older[set];
		c->evictions++;
	}
	c->addr[set * 2 + way] = page ? addr : addr | SHIPPED_ZERO;
	c->older[set] = !way;
	if (page)
		memcpy(c->data + (set * 2 + way) * PAGE_SIZE, page, PAGE_SIZE);
}

void shipped_reset(struct shipped_cache *c)
{
	if (!c->nsets)
		return;
	for (size_t i = 0; i < c->nsets * 2; i++)
		c->addr[i] = SHIPPED_EMPTY;
	madvise(c->data, c->map_len, MADV_DONTNEED);
	forget_kept(c); /* what is cached from now on lies in the next epoch's ranges */
}

static bool in_ranges(const struct shipped_range *r, size_t n, uint64_t addr)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (r[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && addr >= r[lo].start;
}

void shipped_retain(struct shipped_cache *c, const struct shipped_range *ranges, size_t n)
{
	if (!c->nsets)
		return;
	if (c->kept && c->n_kept == n && !memcmp(c->kept, ranges, n * sizeof(*ranges)))
		return;
	for (size_t i = 0; i < c->nsets * 2; i++)
		if (c->addr[i] != SHIPPED_EMPTY && !in_ranges(ranges, n, c->addr[i] & ~SHIPPED_ZERO))
			c->addr[i] = SHIPPED_EMPTY;
	forget_kept(c);
	c->kept = malloc((n ? n : 1) * sizeof(*ranges)); /* without it, the next call walks again */
	if (c->kept) {
		memcpy(c->kept, ranges, n * sizeof(*ranges));
		c->n_kept = n;
	}
}
