/*
 * hist.c - see hist.h.
 */
#include "hist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const double hist_bounds[HIST_NBOUNDS] = {1e-5,	  2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
					  1e-3,	  2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2,
					  0.1,	  0.25,	  0.5,	1.0,  2.5,    10.0};

void hist_add_us(struct hist *h, uint64_t us)
{
	double s = us / 1e6;
	size_t b = 0;

	while (b < HIST_NBOUNDS && s > hist_bounds[b])
		b++;
	h->bucket[b]++;
	h->ring[h->count % HIST_RING] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	h->count++;
	h->sum += s;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

double hist_percentile(const struct hist *h, int pct)
{
	size_t n = h->count < HIST_RING ? h->count : HIST_RING;
	uint32_t v[HIST_RING];

	if (!n)
		return NAN;
	memcpy(v, h->ring, n * sizeof(*v));
	qsort(v, n, sizeof(*v), cmp_u32);
	return v[(n - 1) * pct / 100] / 1e6;
}

double hist_mean(const struct hist *h) { return h->count ? h->sum / h->count : NAN; }
