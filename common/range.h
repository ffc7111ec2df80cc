/*
 * range.h - address ranges [s, e) and the few operations capture needs on
 * arrays of them: the live set (capture/live.c), the written set and what
 * is still owed (capture/wp.c), the pre-copy rounds (capture/precopy.c).
 * One type and one sort-and-merge, so the sets they compare agree.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct range {
	uint64_t s, e;
};

/* A growable array of ranges (util.h's array_push). */
struct rangeset {
	struct range *r;
	size_t n, cap;
};

/* Append [s, e), extending the last range when it ends at s; an empty range is nothing. */
int range_append(struct range **v, size_t *n, size_t *cap, uint64_t s, uint64_t e);

/* Sort by start and merge the ranges that touch or overlap; *n shrinks to what is left. */
void range_normalize(struct range *v, size_t *n);

/* In a normalized array: the index of the first range that ends after addr (n if none). */
size_t range_find(const struct range *v, size_t n, uint64_t addr);
