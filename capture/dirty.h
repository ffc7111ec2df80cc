/*
 * dirty.h - page hashes as last shipped, for the hash dirty-tracking method.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dirty_entry {
	uint64_t addr, hash;
};

struct dirty_table {
	struct dirty_entry *e;
	size_t n, cap;
};

uint64_t dirty_page_hash(const void *page);
/* True if the page at addr is unknown or its hash differs from the one recorded. */
bool dirty_changed(struct dirty_table *t, uint64_t addr, uint64_t hash);
int dirty_set(struct dirty_table *t, uint64_t addr, uint64_t hash);
int dirty_retain(struct dirty_table *t, bool (*keep)(void *ctx, uint64_t addr), void *ctx);
void dirty_reset(struct dirty_table *t);
