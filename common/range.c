/*
 * range.c - see range.h.
 */
#include <errno.h>
#include <stdlib.h>

#include "range.h"
#include "util.h"

int range_append(struct range **v, size_t *n, size_t *cap, uint64_t s, uint64_t e)
{
	struct range *r;

	if (s >= e)
		return 0;
	if (*n && (*v)[*n - 1].e == s) {
		(*v)[*n - 1].e = e;
		return 0;
	}
	r = array_push(v, n, cap, sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct range){s, e};
	return 0;
}

static int cmp_start(const void *a, const void *b)
{
	const struct range *x = a, *y = b;
	return x->s < y->s ? -1 : x->s > y->s;
}

static bool range_sorted(const struct range *v, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (v[i].s < v[i - 1].s)
			return false;
	return true;
}

void range_normalize(struct range *v, size_t *n)
{
	size_t k = 0;

	/* Appended in order often (the live set's spans): the check costs less than qsort. */
	if (!range_sorted(v, *n))
		qsort(v, *n, sizeof(*v), cmp_start);
	for (size_t i = 0; i < *n; i++) {
		if (k && v[i].s <= v[k - 1].e) {
			if (v[i].e > v[k - 1].e)
				v[k - 1].e = v[i].e;
			continue;
		}
		v[k++] = v[i];
	}
	*n = k;
}

size_t range_find(const struct range *v, size_t n, uint64_t addr)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (v[mid].e <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}
