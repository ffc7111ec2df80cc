/*
 * hist.h - a duration histogram for the epoch cost breakdown.
 *
 * Two views of the same samples: fixed buckets (seconds, log-spaced from
 * 10 us to 2.5 s) that only ever count up, which is what a Prometheus
 * histogram is; and the last HIST_RING samples, for exact percentiles in
 * `status` (buckets alone would round a 0.8 ms pause to "under 1 ms").
 * One writer (the daemon's loop, or the journal's writer thread handing
 * its figures back through the loop); no locking.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define HIST_NBOUNDS 18
#define HIST_RING 256

extern const double hist_bounds[HIST_NBOUNDS]; /* upper bounds in seconds; then +Inf */

struct hist {
	uint64_t bucket[HIST_NBOUNDS + 1]; /* not cumulative; the last is +Inf */
	uint64_t count;
	double sum; /* seconds */
	uint32_t ring[HIST_RING]; /* microseconds */
};

void hist_add_us(struct hist *h, uint64_t us);
/* The pct-th percentile of the last HIST_RING samples, in seconds; NAN when empty. */
double hist_percentile(const struct hist *h, int pct);
/* Mean over every sample, in seconds; NAN when empty. */
double hist_mean(const struct hist *h);
