/*
 * shipped.h - the content of pages as last shipped to the backup, so that
 * an epoch can send only the bytes that changed (common/delta.h).
 *
 * Bounded, as QEMU's XBZRLE cache is: a two-way set-associative table of
 * whole pages keyed by address, the older way of a set evicted on a miss.
 * A page not in the cache is shipped whole, and cached. The cache only
 * ever holds what the backup holds: it is reset with every full epoch
 * (which is also what follows any lost link or refused epoch), and pages
 * whose mapping went away are dropped, as the backup drops them.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct shipped_cache {
	uint64_t *addr;	 /* per slot; SHIPPED_EMPTY when free; SHIPPED_ZERO bit: all zero */
	uint8_t *data;	 /* per slot, 4096 bytes; touched only as slots fill */
	uint8_t *older;	 /* per set: which way to evict next */
	size_t nsets;	 /* a power of two; 2 slots each */
	size_t map_len;
	struct shipped_range *kept; /* the ranges of the last shipped_retain (NULL: none since reset) */
	size_t n_kept;
	uint64_t hits, misses, evictions;
};

struct shipped_range {
	uint64_t start, end;
};

/* Room for bytes of pages (rounded down to a power of two of sets). -ENOMEM, or 0. */
int shipped_init(struct shipped_cache *c, uint64_t bytes);
void shipped_free(struct shipped_cache *c);
static inline bool shipped_enabled(const struct shipped_cache *c) { return c->nsets != 0; }

/*
 * The cached copy of the page at addr (delta_zero_page when it was shipped
 * all zero), or NULL (counted as a hit or a miss).
 */
const uint8_t *shipped_lookup(struct shipped_cache *c, uint64_t addr);
/*
 * Remember page (4096 bytes; NULL: all zero) as shipped for addr, evicting
 * if need be. An all-zero page is a flag, not a copy: most pages a Go
 * service writes are zeroed garbage (common/delta.h).
 */
void shipped_store(struct shipped_cache *c, uint64_t addr, const uint8_t *page);

/* Forget everything (a full epoch follows), giving the memory back. */
void shipped_reset(struct shipped_cache *c);
/*
 * Forget the pages outside ranges (in address order, not overlapping),
 * which the backup no longer holds. Nothing to do when they are the ranges
 * of the last call: every page cached since lies in them. (Walking every
 * slot each epoch cost ~1.5% of primaryd's CPU on the paper's workload.)
 */
void shipped_retain(struct shipped_cache *c, const struct shipped_range *ranges, size_t n);
