/*
 * pagemap.h - the PAGEMAP_SCAN ioctl (Linux 6.7), defined here because
 * Debian 12's kernel headers predate it.
 */
#pragma once

#include <linux/types.h>
#include <sys/ioctl.h>

#ifndef PAGEMAP_SCAN
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)
#endif

/*
 * Walk [start, end) with PAGEMAP_SCAN, calling fn for each matching region.
 * Fill in the categories and flags of *tmpl; start, end, the vector and
 * walk_end are ours. The kernel stops when the vector fills, so the walk
 * resumes at walk_end until it reaches end. Returns 0, -errno, or fn's
 * negative result.
 */
#include <stdint.h>
int pagemap_scan(int pagemap_fd, const struct pm_scan_arg *tmpl, uint64_t start, uint64_t end,
		 int (*fn)(void *ctx, uint64_t s, uint64_t e), void *ctx);
