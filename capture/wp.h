/*
 * wp.h - pages written since the last epoch, by userfaultfd write-protect.
 */
#pragma once

#include <stdint.h>

struct capture;

struct wp_range {
	uint64_t s, e;
};

struct image;

struct wp_tracker {
	int uffd;
	struct wp_range *dirty; /* sorted, after wp_collect() */
	size_t n, cap;
	/* written, but not copied (not live then): still owed if they become live */
	struct wp_range *carry;
	size_t n_carry, cap_carry;
	uint64_t newly_tracked; /* bytes registered this epoch (new mappings) */
};

void wp_init(struct wp_tracker *w);
void wp_free(struct wp_tracker *w);

/* With the threads held and c->vmas current: gather written ranges and re-arm. */
int wp_collect(struct capture *c, struct wp_tracker *w);

/*
 * After a capture: remember the written ranges that img did not copy. A
 * page written while it held no live object (a free span, the unused part
 * of a stack) has its write-protection re-armed like any other, so without
 * this it would never be shipped when it becomes live without another write.
 */
int wp_carry_unshipped(struct wp_tracker *w, const struct image *img);

/* Emit the parts of [s, e) written since the last wp_collect() before this one. */
int wp_filter(const struct wp_tracker *w, uint64_t s, uint64_t e,
	      int (*emit)(void *ctx, uint64_t s, uint64_t e), void *ctx);
