/*
 * test_shipped.c - the last-shipped page cache (capture/shipped.c): a page
 * shipped all zero is a flag that reads back as delta_zero_page, a page
 * stored over it reads back as itself, and shipped_retain() forgets every
 * page outside the mappings, even when it skips the walk for ranges it saw
 * last time, and never skips it right after a reset.
 */
#include <stdint.h>

#include "delta.h"
#include "capture/shipped.h"
#include "unit.h"

#define PAGE 4096u

static uint8_t page_a[PAGE], page_b[PAGE];

static void test_zero_flag(void)
{
	struct shipped_cache c;

	CHECK_INT(shipped_init(&c, 64 * PAGE), 0);
	CHECK(shipped_lookup(&c, 0x10000) == NULL);
	shipped_store(&c, 0x10000, NULL);
	CHECK(shipped_lookup(&c, 0x10000) == delta_zero_page);
	shipped_store(&c, 0x10000, page_a);
	const uint8_t *p = shipped_lookup(&c, 0x10000);
	CHECK(p && p != delta_zero_page && !memcmp(p, page_a, PAGE));
	shipped_store(&c, 0x10000, NULL); /* the same slot, now zero: the flag wins over the bytes */
	CHECK(shipped_lookup(&c, 0x10000) == delta_zero_page);
	shipped_store(&c, 0x11000, page_b);
	p = shipped_lookup(&c, 0x11000);
	CHECK(p && !memcmp(p, page_b, PAGE));
	shipped_free(&c);
}

static void test_retain(void)
{
	struct shipped_cache c;
	const struct shipped_range both[] = {{0x10000, 0x20000}, {0x40000, 0x50000}};
	const struct shipped_range first[] = {{0x10000, 0x20000}};

	CHECK_INT(shipped_init(&c, 64 * PAGE), 0);
	shipped_store(&c, 0x10000, page_a);
	shipped_store(&c, 0x40000, NULL);
	shipped_retain(&c, both, 2);
	CHECK(shipped_lookup(&c, 0x10000) != NULL);
	CHECK(shipped_lookup(&c, 0x40000) == delta_zero_page); /* a zero page's flag is not its address */
	shipped_retain(&c, both, 2); /* the same ranges: nothing to forget */
	CHECK(shipped_lookup(&c, 0x40000) == delta_zero_page);
	shipped_retain(&c, first, 1); /* the second mapping went away */
	CHECK(shipped_lookup(&c, 0x10000) != NULL);
	CHECK(shipped_lookup(&c, 0x40000) == NULL);

	/* After a reset, the pages cached come from another epoch's mappings: walk again. */
	shipped_reset(&c);
	shipped_store(&c, 0x40000, page_a);
	shipped_retain(&c, first, 1);
	CHECK(shipped_lookup(&c, 0x40000) == NULL);
	shipped_free(&c);
}

int main(void)
{
	for (size_t i = 0; i < PAGE; i++) {
		page_a[i] = (uint8_t)(i * 7 + 1);
		page_b[i] = (uint8_t)(i * 11 + 3);
	}
	test_zero_flag();
	test_retain();
	UNIT_EXIT();
}
