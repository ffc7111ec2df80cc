/*
 * ship_trace.h - a debug trace of the pages primaryd encodes, for
 * bench/ship_micro.c (--trace) to replay the ship path on real epochs:
 * pages as the reach scan left them, against the cache as it was.
 *
 * CHECKSYNC_DEBUG_SHIP_TRACE=PATH[,SKIP[,COUNT]]: skip the first SKIP pages
 * encoded (default 0: the fill, the first full epoch), then write COUNT
 * (default 40000) to PATH, each as
 *   u64 addr (host order), u8 how (SHIP_TRACE_MISS, _ZERO: cached all zero,
 *   _CACHED: the cached 4096 bytes follow), then the page's 4096 bytes.
 * Off (no file, no cost but a test) without the variable.
 */
#pragma once

#include <stdint.h>
#include <stdio.h>

enum { SHIP_TRACE_MISS = 0, SHIP_TRACE_ZERO = 1, SHIP_TRACE_CACHED = 2 };

struct ship_trace {
	FILE *f;
	uint64_t skip, left;
};

/* Open the trace the environment asks for, if any. */
void ship_trace_open(struct ship_trace *t);
/* One page about to be encoded: base as shipped_lookup() gave it. */
void ship_trace_page(struct ship_trace *t, uint64_t addr, const uint8_t *base, const uint8_t *cur);
void ship_trace_close(struct ship_trace *t);
