/*
 * wp.h - pages written since the last epoch, by userfaultfd write-protect.
 */
#pragma once

#include <stdint.h>

struct capture;

struct wp_range {
	uint64_t s, e;
};

struct wp_tracker {
	int uffd;
	struct wp_range *dirty; /* sorted, after wp_collect() */
	size_t n, cap;
	uint64_t newly_tracked; /* bytes registered this epoch (new mappings) */
};

void wp_init(struct wp_tracker *w);
void wp_free(struct wp_tracker *w);

/* With the threads held and c->vmas current: gather written ranges and re-arm. */
int wp_collect(struct capture *c, struct wp_tracker *w);

/* Emit the parts of [s, e) written since the last wp_collect() before this one. */
int wp_filter(const struct wp_tracker *w, uint64_t s, uint64_t e,
	      int (*emit)(void *ctx, uint64_t s, uint64_t e), void *ctx);
