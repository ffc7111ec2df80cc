/*
 * pagemap.c - see pagemap.h.
 */
#include "pagemap.h"

#include <errno.h>

#include "util.h"

int pagemap_scan(int pagemap_fd, const struct pm_scan_arg *tmpl, uint64_t start, uint64_t end,
		 int (*fn)(void *ctx, uint64_t s, uint64_t e), void *ctx)
{
	struct page_region regions[512];
	struct pm_scan_arg arg = *tmpl;

	arg.size = sizeof(arg);
	arg.start = start;
	arg.end = end;
	arg.vec = (uintptr_t)regions;
	arg.vec_len = ARRAY_SIZE(regions);
	while (arg.start < end) {
		int n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		for (int i = 0; i < n; i++) {
			int r = fn(ctx, regions[i].start, regions[i].end);
			if (r < 0)
				return r;
		}
		if (arg.walk_end <= arg.start)
			break;
		arg.start = arg.walk_end;
	}
	return 0;
}
