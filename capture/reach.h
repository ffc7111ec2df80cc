/*
 * reach.h - which objects allocated since the previous epoch are reachable.
 *
 * In the pause, live.c hands over each in-use span's allocation state
 * (reach_note_span). After the threads run again, capture_reach() compares
 * it with the previous stop's to find the new objects, scans the staged
 * snapshot conservatively from everything that is not a new object, and
 * zeroes the staged bytes of the new objects nothing reaches. See reach.c
 * for why zero is what the restored runtime may find there.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct capture;

/* One in-use span as the pause saw it (fields of runtime.mspan, through DWARF). */
struct reach_span_state {
	uint64_t span; /* the mspan's address */
	uint64_t base, npages, elemsize, nelems, freeindex, allocbits, specials;
	uint32_t sweepgen;
	uint8_t spanclass;
};

/* The start of a stop (capture_held): write tracking is re-armed at each. */
void reach_stop_begin(struct capture *c);
/* In the pause, from live.c: the heap's sweep generation, then each in-use span. */
int reach_spans_begin(struct capture *c, uint32_t heap_sweepgen);
int reach_note_span(struct capture *c, const struct reach_span_state *s);
/* Every in-use span was noted: the table may serve the next stop. */
void reach_spans_end(struct capture *c);

/*
 * After the threads resume: find the reachable new objects and zero the
 * staged bytes of the others. all_staged says the image holds every live
 * page (a dump, a full epoch); otherwise it must hold every page written
 * since the previous stop (write tracking). Never fails the capture: when
 * it cannot decide soundly it leaves the staging as it is and says why in
 * c->stats.reach.state. Returns 0, or -ENOMEM.
 */
int capture_reach(struct capture *c, bool all_staged);

/* For a dump: drop the pages capture_reach() left all zero (restored as zero anyway). */
void capture_reach_drop_zero_pages(struct capture *c);

/* Totals over every capture_reach() of a capture, for status and metrics. */
struct reach_totals {
	uint64_t scans_done, scans_skipped;
	uint64_t new_bytes, reached_bytes, zeroed_bytes;
};
void capture_reach_totals(const struct capture *c, struct reach_totals *t);
