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

#include "capture.h"

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
/* Every mspan of mheap_.allspans, in use or not (its metadata words are no roots). */
int reach_note_mspan(struct capture *c, uint64_t span);
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

/*
 * The same in steps, so that a daemon's loop is never held for long: begin
 * reads what it needs from the live process (at once: the sooner after the
 * resume, the likelier the span bits are still the stop's) and returns 0
 * when there is nothing more to do, 1 when capture_reach_step() is to be
 * called until it returns 0, or -ENOMEM. Each step runs pieces of well
 * under a millisecond until budget_us has passed. Between begin and the
 * last step the staged image and the scan's state are the scan's: nothing
 * else may change the image, nor start a capture.
 */
int capture_reach_begin(struct capture *c, bool all_staged);
int capture_reach_step(struct capture *c, uint64_t budget_us);

/* For a dump: drop the pages capture_reach() left all zero (restored as zero anyway). */
void capture_reach_drop_zero_pages(struct capture *c);

/* Totals over every capture_reach() of a capture, for status and metrics. */
/* What the shipped pages hold, by page: where the bytes per request go. */
enum reach_ship_class {
	RS_HEAP_NEW,	/* arena pages with new objects */
	RS_HEAP_OLD,	/* other arena pages: old objects written, span tails */
	RS_STACKS,	/* goroutine and thread stacks in use */
	RS_GLOBALS,	/* the executable's data and bss */
	RS_OFFHEAP,	/* runtime metadata, C memory, everything else */
	RS_COUNT
};
struct reach_totals {
	uint64_t scans_done, scans_skipped;
	uint64_t new_bytes, reached_bytes, zeroed_bytes;
	/* New bytes first reached from roots of each mem_class, MC_COUNT: registers. */
	uint64_t reached_from[MC_COUNT + 1];
	uint64_t reached_noscan; /* of reached_bytes, in noscan spans (data, no pointers) */
	uint64_t scan_cpu_us;	 /* CPU time of the scans (the thread's clock: the machine may be loaded) */
	uint64_t root_bytes;	 /* staged bytes scanned as roots */
	uint64_t staged[RS_COUNT];  /* bytes staged for shipping, by what the page holds */
	uint64_t shipped[RS_COUNT]; /* delta bytes encoded for them (before compression) */
	uint64_t shipped_nonzero[RS_COUNT]; /* of those, bytes not zero (what compression keeps) */
};
void capture_reach_totals(const struct capture *c, struct reach_totals *t);

/* The link encoded the delta record rec of len bytes for the page at addr (incremental.c). */
void reach_note_shipped(struct capture *c, uint64_t addr, const uint8_t *rec, size_t len);

struct status_report;
/* The reach_* counters of status and /metrics. */
void capture_reach_report(const struct capture *c, struct status_report *r);
